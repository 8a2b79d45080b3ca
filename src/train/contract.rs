//! The step-graph contract: the inputs, outputs and shapes a step graph must declare.

use super::error::TrainError;
use super::step::{
    DROPOUT_PREFIX, FEATURES, GRAD_PREFIX, LOGITS, LOSS, LR, NEW_PREFIX, OPT_PREFIX, PARAM_PREFIX,
    STEP, TARGETS,
};

/// One declared input or output: name, whether it is float, and its dimensions (`-1` for a
/// named/dynamic one).
#[derive(Debug, Clone, PartialEq)]
pub struct Io {
    pub name: String,
    pub float: bool,
    pub dims: Vec<i64>,
}

/// What a valid step graph declares.
#[derive(Debug, Clone, PartialEq)]
pub struct Contract {
    pub features: usize,
    pub classes: usize,
    /// `param.*` inputs without the prefix, with their shapes.
    pub params: Vec<(String, Vec<usize>)>,
    /// `opt.*` inputs (full names) with their shapes.
    pub opt: Vec<(String, Vec<usize>)>,
    /// `dropout.*` inputs (full names) with their widths.
    pub dropout: Vec<(String, usize)>,
    /// Outputs `grad.<param>` exist.
    pub has_grads: bool,
    pub has_logits: bool,
}

fn static_shape(io: &Io) -> Option<Vec<usize>> {
    io.dims
        .iter()
        .map(|&d| usize::try_from(d).ok().filter(|&d| d > 0))
        .collect()
}

/// Checks declared inputs and outputs against the contract; names the first problem.
pub fn check_contract(graph: &str, inputs: &[Io], outputs: &[Io]) -> Result<Contract, TrainError> {
    let problem = |problem: String| TrainError::Contract {
        graph: graph.to_string(),
        problem,
    };
    let find = |name: &str| inputs.iter().find(|io| io.name == name);
    let mut contract = Contract {
        features: 0,
        classes: 0,
        params: Vec::new(),
        opt: Vec::new(),
        dropout: Vec::new(),
        has_grads: false,
        has_logits: outputs.iter().any(|o| o.name == LOGITS),
    };
    for (name, rank) in [(FEATURES, 2), (TARGETS, 2), (STEP, 0), (LR, 0)] {
        let io = find(name).ok_or_else(|| problem(format!("has no input `{name}`")))?;
        let scalar_ok = rank == 0 && (io.dims.is_empty() || io.dims == [1]);
        if !io.float || (io.dims.len() != rank && !scalar_ok) {
            return Err(problem(format!(
                "input `{name}` must be a float tensor of rank {rank}, found {}{:?}",
                if io.float { "float " } else { "non-float " },
                io.dims
            )));
        }
    }
    let width = |name: &str| find(name).and_then(|io| usize::try_from(io.dims[1]).ok());
    contract.features = width(FEATURES)
        .filter(|&d| d > 0)
        .ok_or_else(|| problem(format!("input `{FEATURES}` needs a fixed feature size")))?;
    contract.classes = width(TARGETS).filter(|&d| d > 1).ok_or_else(|| {
        problem(format!(
            "input `{TARGETS}` needs a fixed class count of 2 or more"
        ))
    })?;
    for io in inputs {
        let name = io.name.as_str();
        if [FEATURES, TARGETS, STEP, LR].contains(&name) {
            continue;
        }
        if !io.float {
            return Err(problem(format!("input `{name}` must be float")));
        }
        if let Some(param) = name.strip_prefix(PARAM_PREFIX) {
            let shape = static_shape(io).ok_or_else(|| {
                problem(format!(
                    "input `{name}` needs a fixed shape, found {:?}",
                    io.dims
                ))
            })?;
            contract.params.push((param.to_string(), shape));
        } else if name.starts_with(OPT_PREFIX) {
            let shape = static_shape(io).ok_or_else(|| {
                problem(format!(
                    "input `{name}` needs a fixed shape, found {:?}",
                    io.dims
                ))
            })?;
            contract.opt.push((name.to_string(), shape));
        } else if name.starts_with(DROPOUT_PREFIX) {
            let width = (io.dims.len() == 2)
                .then(|| usize::try_from(io.dims[1]).ok())
                .flatten()
                .filter(|&w| w > 0)
                .ok_or_else(|| problem(format!("input `{name}` must be [batch, width]")))?;
            contract.dropout.push((name.to_string(), width));
        } else {
            return Err(problem(format!(
                "input `{name}` is not part of the contract (param.*, opt.*, dropout.*, {FEATURES}, {TARGETS}, {STEP}, {LR})"
            )));
        }
    }
    if contract.params.is_empty() {
        return Err(problem("has no `param.*` inputs: nothing to train".into()));
    }
    if !outputs.iter().any(|o| o.name == LOSS && o.float) {
        return Err(problem(format!("has no float output `{LOSS}`")));
    }
    let state_inputs = contract
        .params
        .iter()
        .map(|(p, _)| format!("{PARAM_PREFIX}{p}"))
        .chain(contract.opt.iter().map(|(o, _)| o.clone()));
    for input in state_inputs {
        let wanted = format!("{NEW_PREFIX}{input}");
        if !outputs.iter().any(|o| o.name == wanted && o.float) {
            return Err(problem(format!(
                "input `{input}` has no matching output `{wanted}`"
            )));
        }
    }
    contract.has_grads = contract.params.iter().all(|(p, _)| {
        outputs
            .iter()
            .any(|o| o.name == format!("{GRAD_PREFIX}{p}"))
    });
    Ok(contract)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(name: &str, dims: &[i64]) -> Io {
        Io {
            name: name.into(),
            float: true,
            dims: dims.to_vec(),
        }
    }

    fn valid() -> (Vec<Io>, Vec<Io>) {
        (
            vec![
                io("param.w", &[4, 2]),
                io("opt.m.w", &[4, 2]),
                io(FEATURES, &[-1, 4]),
                io(TARGETS, &[-1, 2]),
                io(STEP, &[]),
                io(LR, &[]),
            ],
            vec![
                io(LOSS, &[]),
                io("new.param.w", &[4, 2]),
                io("new.opt.m.w", &[4, 2]),
            ],
        )
    }

    #[test]
    fn a_graph_that_follows_the_contract_is_described() {
        let (inputs, outputs) = valid();
        let contract = check_contract("g", &inputs, &outputs).unwrap();
        assert_eq!(contract.features, 4);
        assert_eq!(contract.classes, 2);
        assert_eq!(contract.params, vec![("w".to_string(), vec![4, 2])]);
        assert!(!contract.has_grads);
    }

    #[test]
    fn each_breach_is_named() {
        type Breach = Box<dyn Fn(&mut Vec<Io>, &mut Vec<Io>)>;
        let cases: Vec<(Breach, &str)> = vec![
            (Box::new(|i, _| i.retain(|x| x.name != LR)), "no input `lr`"),
            (
                Box::new(|_, o| o.retain(|x| x.name != "new.opt.m.w")),
                "`opt.m.w` has no matching output",
            ),
            (
                Box::new(|i, _| i.push(io("extra", &[1]))),
                "`extra` is not part of the contract",
            ),
            (
                Box::new(|i, _| i[0].dims = vec![-1, 2]),
                "`param.w` needs a fixed shape",
            ),
            (
                Box::new(|_, o| o.retain(|x| x.name != LOSS)),
                "no float output `loss`",
            ),
            (
                Box::new(|i, _| i[3].dims = vec![-1, 1]),
                "class count of 2 or more",
            ),
            (
                Box::new(|i, _| i.retain(|x| !x.name.starts_with("param"))),
                "nothing to train",
            ),
        ];
        for (breach, expected) in cases {
            let (mut inputs, mut outputs) = valid();
            breach(&mut inputs, &mut outputs);
            let err = check_contract("custom.onnx", &inputs, &outputs)
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(expected) && err.contains("custom.onnx"),
                "{err}"
            );
        }
    }
}
