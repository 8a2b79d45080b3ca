//! How training fails: a graph breaking the contract, the engine, a failed step, divergence.

use crate::engine::EngineError;

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
