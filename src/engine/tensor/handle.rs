//! `TensorEngine`: a tensor-task model on its own OS thread (which owns the session) behind
//! a cloneable async handle; requests wait in a bounded channel.

use std::path::Path;
use std::sync::Arc;

use serde_json::Value;
use tokenizers::Tokenizer;
use tokio::sync::{mpsc, oneshot};

use super::{RowFeed, TensorModel, TensorPlan, check_mapping};
use crate::engine::EngineError;
use crate::job::{MODEL_FILE, TOKENIZER_FILE, TensorSpec};
use crate::settings::EngineSettings;

/// Per row, each written output's name and value.
pub type TensorRows = Vec<Vec<(String, Value)>>;

struct Request {
    feeds: Vec<Vec<RowFeed>>,
    reply: oneshot::Sender<Result<TensorRows, EngineError>>,
}

/// A cloneable handle to a tensor model running on its own thread.
#[derive(Clone)]
pub struct TensorEngine {
    requests: mpsc::Sender<Request>,
    plan: Arc<TensorPlan>,
}

impl TensorEngine {
    /// Opens the package in `dir` (blocking), checks `spec` against its model's inputs and
    /// outputs (`EngineError::Model` naming what does not fit, permanent), and starts its
    /// thread.
    pub fn load(
        dir: &Path,
        spec: &TensorSpec,
        settings: &EngineSettings,
    ) -> Result<Self, EngineError> {
        let (model, plan) = Self::open(dir, spec, settings)?;
        let tokenizer = if plan.inputs.iter().any(|i| i.tokenized) {
            let path = dir.join(TOKENIZER_FILE);
            let mut tokenizer = Tokenizer::from_file(&path)
                .map_err(|e| EngineError::Tokenizer(format!("{}: {e}", path.display())))?;
            tokenizer.with_padding(None);
            Some(tokenizer)
        } else {
            None
        };
        let plan = Arc::new(plan);
        // Capacity 1: one request waits while one runs.
        let (requests, receiver) = mpsc::channel::<Request>(1);
        let thread_plan = plan.clone();
        std::thread::Builder::new()
            .name("sluice-tensor".into())
            .spawn(move || serve(receiver, model, &thread_plan, tokenizer.as_ref()))
            .map_err(|e| EngineError::Runtime(format!("starting the tensor engine thread: {e}")))?;
        Ok(Self { requests, plan })
    }

    /// Checks `spec` against the package's model without keeping it (planning). Blocking.
    pub fn check(
        dir: &Path,
        spec: &TensorSpec,
        settings: &EngineSettings,
    ) -> Result<TensorPlan, EngineError> {
        Self::open(dir, spec, settings).map(|(_, plan)| plan)
    }

    fn open(
        dir: &Path,
        spec: &TensorSpec,
        settings: &EngineSettings,
    ) -> Result<(TensorModel, TensorPlan), EngineError> {
        let model = TensorModel::load(&dir.join(MODEL_FILE), settings)?;
        let plan =
            check_mapping(&model.inputs, &model.outputs, spec).map_err(EngineError::Model)?;
        Ok((model, plan))
    }

    pub fn plan(&self) -> &TensorPlan {
        &self.plan
    }

    /// Runs the rows (any number; the graph's fixed batch size, if any, is honoured) and
    /// returns each row's outputs in the same order.
    pub async fn run(&self, feeds: Vec<Vec<RowFeed>>) -> Result<TensorRows, EngineError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(Request { feeds, reply })
            .await
            .map_err(|_| EngineError::Stopped)?;
        answer.await.map_err(|_| EngineError::Stopped)?
    }
}

fn serve(
    mut receiver: mpsc::Receiver<Request>,
    mut model: TensorModel,
    plan: &TensorPlan,
    tokenizer: Option<&Tokenizer>,
) {
    while let Some(Request { feeds, reply }) = receiver.blocking_recv() {
        let answer = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            model.run(plan, tokenizer, &feeds)
        }))
        .unwrap_or_else(|panic| {
            Err(EngineError::Panicked(
                crate::engine::tokenize::panic_message(&*panic),
            ))
        });
        let _ = reply.send(answer);
    }
}
