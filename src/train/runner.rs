//! Runs a step graph on ONNX Runtime: checks the graph against the step-graph contract when
//! it is opened, then feeds parameters, optimiser state and a batch in and takes the updated
//! state back, one step at a time. Synchronous: callers run it on their own thread.

use std::borrow::Cow;

use ort::session::{Session, SessionInputValue};
use ort::value::{Tensor as OrtTensor, ValueType};

use super::contract::{Contract, Io, check_contract};
use super::error::TrainError;
use super::head::{Tensor, Tensors};
use super::step::{
    FEATURES, GRAD_PREFIX, LOGITS, LOSS, LR, NEW_PREFIX, PARAM_PREFIX, STEP, TARGETS,
};
use crate::engine::{EngineError, ModelSource, open_session};
use crate::settings::EngineSettings;

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
