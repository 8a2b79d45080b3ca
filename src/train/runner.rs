//! Runs a step graph on ONNX Runtime: checks the graph against the step-graph contract when
//! it is opened, then feeds parameters, optimiser state and a batch in and takes the updated
//! state back, one step at a time. Synchronous: callers run it on their own thread.

use std::borrow::Cow;

use ort::session::{Session, SessionInputValue};
use ort::value::{Tensor as OrtTensor, ValueType};

use super::head::{Tensor, Tensors};
use super::step::{
    DROPOUT_PREFIX, FEATURES, GRAD_PREFIX, LOGITS, LOSS, LR, NEW_PREFIX, OPT_PREFIX, PARAM_PREFIX,
    STEP, TARGETS,
};
use crate::engine::{EngineError, ModelSource, open_session};
use crate::settings::EngineSettings;

#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    /// The step graph does not follow the contract; permanent.
    #[error("step graph {graph}: {problem} (see the step-graph contract in the README)")]
    Contract { graph: String, problem: String },
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A step failed to run or gave malformed results.
    #[error("step graph {graph}: {message}")]
    Run { graph: String, message: String },
    /// The run diverged: a number it produced is NaN or infinite; permanent.
    #[error(
        "training {what} became {value} at step {step} (epoch {epoch}); lower the learning rate (training.optimizer.lr) or check the data for extreme values"
    )]
    NonFinite {
        /// `loss`, `parameter head.weight`, `evaluation loss`.
        what: String,
        /// `NaN` or `infinite`.
        value: &'static str,
        step: u64,
        /// Counted from 1: the epoch the step belongs to.
        epoch: u64,
    },
}

impl TrainError {
    /// `Err(NonFinite)` naming `what` when any of `values` is NaN or infinite.
    pub fn check_finite<T: Copy + Into<f64>>(
        what: &str,
        values: &[T],
        step: u64,
        epoch: u64,
    ) -> Result<(), Self> {
        match values
            .iter()
            .map(|&v| v.into())
            .find(|v: &f64| !v.is_finite())
        {
            None => Ok(()),
            Some(v) => Err(TrainError::NonFinite {
                what: what.to_string(),
                value: if v.is_nan() { "NaN" } else { "infinite" },
                step,
                epoch,
            }),
        }
    }
}

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

/// Parameters, optimiser state and how many steps were taken: everything a checkpoint holds
/// besides the data cursor and random state.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainState {
    pub params: Tensors,
    /// Keyed by the full input name (`opt.m.head.weight`).
    pub opt: Tensors,
    pub step: u64,
}

/// One mini-batch: `rows` feature rows and their one-hot targets, plus a keep-mask per
/// `dropout.*` input (in the contract's order).
pub struct StepBatch<'a> {
    pub rows: usize,
    pub features: &'a [f32],
    pub targets: &'a [f32],
    pub dropout: Vec<Vec<f32>>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct StepOutput {
    pub loss: f32,
    /// `grad.*` outputs by parameter name, when the graph has them.
    pub grads: Tensors,
    pub logits: Option<Tensor>,
}

pub struct StepSession {
    graph: String,
    session: Session,
    provider: &'static str,
    contract: Contract,
}

fn describe(outlets: &[ort::value::Outlet]) -> Vec<Io> {
    outlets
        .iter()
        .map(|o| match o.dtype() {
            ValueType::Tensor { ty, shape, .. } => Io {
                name: o.name().to_string(),
                float: *ty == ort::value::TensorElementType::Float32,
                dims: shape.to_vec(),
            },
            _ => Io {
                name: o.name().to_string(),
                float: false,
                dims: Vec::new(),
            },
        })
        .collect()
}

impl StepSession {
    /// Opens `bytes` (an ONNX step graph named `graph` in messages) on the configured
    /// provider and checks it against the contract.
    pub fn open(graph: &str, bytes: &[u8], settings: &EngineSettings) -> Result<Self, TrainError> {
        let (session, provider) =
            open_session(ModelSource::Memory { name: graph, bytes }, settings).map_err(
                |e| match e {
                    EngineError::Model(message) => TrainError::Contract {
                        graph: graph.to_string(),
                        problem: format!("is not a valid ONNX model: {message}"),
                    },
                    other => TrainError::Engine(other),
                },
            )?;
        let contract = check_contract(
            graph,
            &describe(session.inputs()),
            &describe(session.outputs()),
        )?;
        Ok(Self {
            graph: graph.to_string(),
            session,
            provider,
            contract,
        })
    }

    pub fn contract(&self) -> &Contract {
        &self.contract
    }

    /// `cpu` or `cuda`.
    pub fn provider(&self) -> &'static str {
        self.provider
    }

    /// A first state from starting parameters: shapes checked, optimiser state zero.
    pub fn initial_state(&self, params: Tensors) -> Result<TrainState, TrainError> {
        for (name, shape) in &self.contract.params {
            match params.get(name) {
                Some(t) if &t.shape == shape => {}
                Some(t) => {
                    return Err(self.run_error(format!(
                        "parameter `{name}` has shape {:?}, the graph wants {shape:?}",
                        t.shape
                    )));
                }
                None => {
                    return Err(self.run_error(format!("no starting value for parameter `{name}`")));
                }
            }
        }
        let opt = self
            .contract
            .opt
            .iter()
            .map(|(name, shape)| (name.clone(), Tensor::zeros(shape)))
            .collect();
        Ok(TrainState {
            params,
            opt,
            step: 0,
        })
    }

    fn run_error(&self, message: String) -> TrainError {
        TrainError::Run {
            graph: self.graph.clone(),
            message,
        }
    }

    /// One optimisation step: updates `state` in place and returns the batch's loss.
    pub fn step(
        &mut self,
        state: &mut TrainState,
        batch: &StepBatch<'_>,
        lr: f32,
    ) -> Result<StepOutput, TrainError> {
        let contract = &self.contract;
        if batch.features.len() != batch.rows * contract.features
            || batch.targets.len() != batch.rows * contract.classes
            || batch.dropout.len() != contract.dropout.len()
        {
            return Err(self.run_error(format!(
                "batch of {} rows does not fit {} features, {} classes and {} dropout masks",
                batch.rows,
                contract.features,
                contract.classes,
                contract.dropout.len()
            )));
        }
        let tensor = |shape: Vec<i64>, data: &[f32]| {
            OrtTensor::from_array((shape, data.to_vec()))
                .map(SessionInputValue::from)
                .map_err(|e| format!("building an input tensor: {e}"))
        };
        let mut inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = Vec::new();
        let mut push = |name: String, shape: Vec<i64>, data: &[f32]| -> Result<(), String> {
            inputs.push((Cow::Owned(name), tensor(shape, data)?));
            Ok(())
        };
        let shape_of = |t: &Tensor| t.shape.iter().map(|&d| d as i64).collect::<Vec<_>>();
        let rows = batch.rows as i64;
        (|| -> Result<(), String> {
            for (name, _) in &contract.params {
                let t = &state.params[name];
                push(format!("{PARAM_PREFIX}{name}"), shape_of(t), &t.data)?;
            }
            for (name, _) in &contract.opt {
                let t = &state.opt[name];
                push(name.clone(), shape_of(t), &t.data)?;
            }
            push(
                FEATURES.into(),
                vec![rows, contract.features as i64],
                batch.features,
            )?;
            push(
                TARGETS.into(),
                vec![rows, contract.classes as i64],
                batch.targets,
            )?;
            push(STEP.into(), vec![], &[(state.step + 1) as f32])?;
            push(LR.into(), vec![], &[lr])?;
            for ((name, width), mask) in contract.dropout.iter().zip(&batch.dropout) {
                push(name.clone(), vec![rows, *width as i64], mask)?;
            }
            Ok(())
        })()
        .map_err(|m| self.run_error(m))?;
        let graph = self.graph.clone();
        let run_error = |message: String| TrainError::Run {
            graph: graph.clone(),
            message,
        };
        let outputs = self
            .session
            .run(inputs)
            .map_err(|e| run_error(format!("run: {e}")))?;
        let read = |name: &str| -> Result<Tensor, TrainError> {
            let (shape, data) = outputs[name]
                .try_extract_tensor::<f32>()
                .map_err(|e| run_error(format!("output `{name}`: {e}")))?;
            Ok(Tensor {
                shape: shape.iter().map(|&d| d as usize).collect(),
                data: data.to_vec(),
            })
        };
        let loss = read(LOSS)?;
        let loss = *loss
            .data
            .first()
            .ok_or_else(|| run_error("output `loss` is empty".into()))?;
        let mut new_params = Tensors::new();
        for (name, shape) in &contract.params {
            let t = read(&format!("{NEW_PREFIX}{PARAM_PREFIX}{name}"))?;
            if &t.shape != shape {
                return Err(run_error(format!(
                    "output `new.param.{name}` has shape {:?}",
                    t.shape
                )));
            }
            new_params.insert(name.clone(), t);
        }
        let mut new_opt = Tensors::new();
        for (name, shape) in &contract.opt {
            let t = read(&format!("{NEW_PREFIX}{name}"))?;
            if &t.shape != shape {
                return Err(run_error(format!(
                    "output `new.{name}` has shape {:?}",
                    t.shape
                )));
            }
            new_opt.insert(name.clone(), t);
        }
        let mut grads = Tensors::new();
        if contract.has_grads {
            for (name, _) in &contract.params {
                grads.insert(name.clone(), read(&format!("{GRAD_PREFIX}{name}"))?);
            }
        }
        let logits = if contract.has_logits {
            Some(read(LOGITS)?)
        } else {
            None
        };
        state.params = new_params;
        state.opt = new_opt;
        state.step += 1;
        Ok(StepOutput {
            loss,
            grads,
            logits,
        })
    }
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
