//! The ONNX Runtime backend: loads the runtime library once per process and runs a model
//! session on padded token batches.

use std::borrow::Cow;
use std::path::Path;
use std::sync::OnceLock;

use ort::environment::Environment;
use ort::ep::{self, ExecutionProvider as _};
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{Session, SessionInputValue};
use ort::value::{Tensor, ValueType};

use super::{EngineError, InferenceBackend, TokenBatch};
use crate::job::{IoNames, Pooling};
use crate::settings::{EngineSettings, ExecutionProvider};

static RUNTIME: OnceLock<Result<Environment, String>> = OnceLock::new();

/// Loads the runtime library now, so a worker without one fails at start instead of failing
/// the jobs it takes.
pub fn init_runtime(settings: &EngineSettings) -> Result<(), EngineError> {
    runtime(settings)?;
    let cuda = ep::CUDA::is_available().unwrap_or(false);
    if settings.execution_provider == ExecutionProvider::Cuda && !cuda {
        return Err(EngineError::Runtime(format!(
            "execution_provider = cuda, but the ONNX Runtime library at {} has no CUDA provider: \
             point engine.ort_dylib_path at the onnxruntime-gpu build",
            settings.ort_dylib_path
        )));
    }
    tracing::info!(
        library = %settings.ort_dylib_path,
        cuda_available = cuda,
        requested = ?settings.execution_provider,
        "ONNX Runtime loaded"
    );
    Ok(())
}

/// Loads `libonnxruntime` from `engine.ort_dylib_path` once per process.
fn runtime(settings: &EngineSettings) -> Result<&'static Environment, EngineError> {
    let result = RUNTIME.get_or_init(|| {
        let path = settings.ort_dylib_path.clone();
        if path.is_empty() {
            return Err(
                "no ONNX Runtime library configured: set engine.ort_dylib_path \
                 (SLUICE__ENGINE__ORT_DYLIB_PATH) or ORT_DYLIB_PATH to libonnxruntime.so.1.31.1"
                    .to_string(),
            );
        }
        let builder =
            ort::init_from(&path).map_err(|e| format!("loading ONNX Runtime from {path}: {e}"))?;
        builder
            .with_name("sluice")
            .build()
            .map_err(|e| format!("starting ONNX Runtime from {path}: {e}"))
    });
    result
        .as_ref()
        .map_err(|message| EngineError::Runtime(message.clone()))
}

pub struct OrtBackend {
    session: Session,
    input_ids: String,
    attention_mask: String,
    token_type_ids: Option<String>,
    output: String,
    dimension: usize,
    /// The output is one vector per row (`[rows, dimension]`, `Pooling::None`) rather than
    /// token states.
    sentence_output: bool,
    provider: &'static str,
}

/// Where a session's model comes from: a file, or bytes built in memory (training graphs).
#[derive(Clone, Copy)]
pub enum ModelSource<'a> {
    File(&'a Path),
    Memory { name: &'a str, bytes: &'a [u8] },
}

impl ModelSource<'_> {
    fn describe(&self) -> String {
        match self {
            ModelSource::File(path) => path.display().to_string(),
            ModelSource::Memory { name, .. } => (*name).to_string(),
        }
    }

    fn commit(&self, mut builder: ort::session::builder::SessionBuilder) -> ort::Result<Session> {
        match self {
            ModelSource::File(path) => builder.commit_from_file(path),
            ModelSource::Memory { bytes, .. } => builder.commit_from_memory(bytes),
        }
    }
}

fn cpu_session(
    env: &Environment,
    model: &ModelSource<'_>,
    settings: &EngineSettings,
) -> ort::Result<Session> {
    let builder = Session::builder(env)?
        .with_optimization_level(GraphOptimizationLevel::All)?
        .with_intra_threads(settings.intra_op_threads)?
        .with_inter_threads(settings.inter_op_threads)?;
    model.commit(builder)
}

fn cuda_session(
    env: &Environment,
    model: &ModelSource<'_>,
    settings: &EngineSettings,
) -> ort::Result<Session> {
    let cuda = ep::CUDA::default()
        .with_device_id(settings.gpu_device_id)
        .build()
        .error_on_failure();
    let builder = Session::builder(env)?
        .with_optimization_level(GraphOptimizationLevel::All)?
        .with_execution_providers([cuda])?;
    model.commit(builder)
}

/// Opens a session on the provider the settings ask for (the runtime library loaded
/// first); says which provider runs it.
pub fn open_session(
    model: ModelSource<'_>,
    settings: &EngineSettings,
) -> Result<(Session, &'static str), EngineError> {
    let env = runtime(settings)?;
    build_session(env, &model, settings)
}

/// Opens the session on the provider the settings ask for; says which one runs.
fn build_session(
    env: &Environment,
    model: &ModelSource<'_>,
    settings: &EngineSettings,
) -> Result<(Session, &'static str), EngineError> {
    let model_error = |e: ort::Error| EngineError::Model(format!("{}: {e}", model.describe()));
    if settings.execution_provider == ExecutionProvider::Cpu {
        return Ok((
            cpu_session(env, model, settings).map_err(model_error)?,
            "cpu",
        ));
    }
    let compiled_in = ep::CUDA::is_available().unwrap_or(false);
    let strict = settings.execution_provider == ExecutionProvider::Cuda;
    if compiled_in {
        match cuda_session(env, model, settings) {
            Ok(session) => return Ok((session, "cuda")),
            Err(e) if strict => {
                return Err(EngineError::Runtime(format!(
                    "execution_provider = cuda, but the CUDA provider did not start on GPU {}: {e} \
                     (are the CUDA 13 and cuDNN 9 libraries beside libonnxruntime, and the driver >= 580?)",
                    settings.gpu_device_id
                )));
            }
            Err(e) => {
                tracing::warn!(error = %e, "CUDA provider did not start; running on the CPU");
            }
        }
    } else if strict {
        return Err(EngineError::Runtime(format!(
            "execution_provider = cuda, but the ONNX Runtime library at {} has no CUDA provider: \
             point engine.ort_dylib_path at the onnxruntime-gpu build",
            settings.ort_dylib_path
        )));
    }
    Ok((
        cpu_session(env, model, settings).map_err(model_error)?,
        "cpu",
    ))
}

/// Allocation failures, told apart from other run errors so the engine can retry smaller.
fn is_out_of_memory(message: &str) -> bool {
    let lower = message.to_ascii_lowercase();
    [
        "failed to allocate",
        "out of memory",
        "bad_alloc",
        "alloc_failed",
        "memoryallocation",
    ]
    .iter()
    .any(|needle| lower.contains(needle))
}

impl OrtBackend {
    /// A token-state model (`[rows, seq, dimension]`), pooled by the engine.
    pub fn load(
        model: &Path,
        names: &IoNames,
        dimension: usize,
        settings: &EngineSettings,
    ) -> Result<Self, EngineError> {
        Self::load_for(model, names, dimension, Pooling::Mean, settings)
    }

    /// Like `load`; with `Pooling::None` the output read is the model's own
    /// `[rows, dimension]` sentence vector.
    pub fn load_for(
        model: &Path,
        names: &IoNames,
        dimension: usize,
        pooling: Pooling,
        settings: &EngineSettings,
    ) -> Result<Self, EngineError> {
        let rank = if pooling == Pooling::None { 2 } else { 3 };
        let env = runtime(settings)?;
        let (session, provider) = build_session(env, &ModelSource::File(model), settings)?;
        tracing::info!(provider, model = %model.display(), "ONNX Runtime session ready");
        let inputs: Vec<String> = session
            .inputs()
            .iter()
            .map(|i| i.name().to_string())
            .collect();
        let outputs: Vec<String> = session
            .outputs()
            .iter()
            .map(|o| o.name().to_string())
            .collect();
        let pick = |wanted: &Option<String>, conventional: &str, required: bool| {
            let name = wanted.clone().unwrap_or_else(|| conventional.to_string());
            if inputs.contains(&name) {
                Ok(Some(name))
            } else if required || wanted.is_some() {
                Err(EngineError::Model(format!(
                    "{}: the model has no input `{name}` (its inputs: {})",
                    model.display(),
                    inputs.join(", ")
                )))
            } else {
                Ok(None)
            }
        };
        let input_ids = pick(&names.input_ids, "input_ids", true)?.expect("required");
        let attention_mask =
            pick(&names.attention_mask, "attention_mask", true)?.expect("required");
        let token_type_ids = pick(&names.token_type_ids, "token_type_ids", false)?;
        let output = match &names.output {
            Some(name) if outputs.contains(name) => name.clone(),
            Some(name) => {
                return Err(EngineError::Model(format!(
                    "{}: the model has no output `{name}` (its outputs: {})",
                    model.display(),
                    outputs.join(", ")
                )));
            }
            // Token states are the `[batch, seq, dimension]` output (a sentence vector the
            // `[batch, dimension]` one); exported models often carry others (pooled vectors,
            // masks) before it.
            None => session
                .outputs()
                .iter()
                .find(|o| match o.dtype() {
                    ValueType::Tensor { shape, .. } => {
                        shape.len() == rank
                            && (shape[rank - 1] == dimension as i64 || shape[rank - 1] < 0)
                    }
                    _ => false,
                })
                .or_else(|| session.outputs().first())
                .map(|o| o.name().to_string())
                .ok_or_else(|| {
                    EngineError::Model(format!("{}: the model has no outputs", model.display()))
                })?,
        };
        Ok(Self {
            session,
            input_ids,
            attention_mask,
            token_type_ids,
            output,
            dimension,
            sentence_output: rank == 2,
            provider,
        })
    }

    /// `cpu` or `cuda`: where this session runs.
    pub fn provider(&self) -> &'static str {
        self.provider
    }
}

impl InferenceBackend for OrtBackend {
    fn hidden_states(&mut self, batch: &TokenBatch) -> Result<Vec<f32>, EngineError> {
        let shape = vec![batch.rows as i64, batch.seq as i64];
        let tensor = |data: &Vec<i64>| {
            Tensor::from_array((shape.clone(), data.clone()))
                .map_err(|e| EngineError::Inference(format!("building input tensor: {e}")))
        };
        let mut inputs: Vec<(Cow<'_, str>, SessionInputValue<'_>)> = vec![
            (
                self.input_ids.as_str().into(),
                tensor(&batch.input_ids)?.into(),
            ),
            (
                self.attention_mask.as_str().into(),
                tensor(&batch.attention_mask)?.into(),
            ),
        ];
        if let Some(name) = &self.token_type_ids {
            inputs.push((name.as_str().into(), tensor(&batch.token_type_ids)?.into()));
        }
        let outputs = self.session.run(inputs).map_err(|e| {
            let message = format!("session run: {e}");
            if is_out_of_memory(&message) {
                EngineError::OutOfMemory(message)
            } else {
                EngineError::Inference(message)
            }
        })?;
        let (shape, data) = outputs[self.output.as_str()]
            .try_extract_tensor::<f32>()
            .map_err(|e| {
                EngineError::Inference(format!("reading output `{}`: {e}", self.output))
            })?;
        let expected = if self.sentence_output {
            vec![batch.rows as i64, self.dimension as i64]
        } else {
            vec![batch.rows as i64, batch.seq as i64, self.dimension as i64]
        };
        if shape[..] != expected[..] {
            return Err(EngineError::Model(format!(
                "output `{}` has shape {:?}, expected {:?} (is `dimension` in the package right?)",
                self.output,
                &shape[..],
                expected
            )));
        }
        Ok(data.to_vec())
    }
}

/// A classifier head (`head.onnx`: `features` → `probabilities`) run after pooling, on the
/// engine thread.
pub struct OrtHead {
    session: Session,
    classes: usize,
}

impl OrtHead {
    pub fn load(
        path: &Path,
        classes: usize,
        settings: &EngineSettings,
    ) -> Result<Self, EngineError> {
        let (session, _) = open_session(ModelSource::File(path), settings)?;
        Ok(Self { session, classes })
    }

    /// Class probabilities, `[rows, classes]` row-major, for pooled embeddings
    /// `[rows, dim]`.
    pub fn probabilities(
        &mut self,
        embeddings: &[f32],
        rows: usize,
        dim: usize,
    ) -> Result<Vec<f32>, EngineError> {
        let input = Tensor::from_array((vec![rows as i64, dim as i64], embeddings.to_vec()))
            .map_err(|e| EngineError::Inference(format!("head input: {e}")))?;
        let outputs = self
            .session
            .run(ort::inputs!["features" => input])
            .map_err(|e| EngineError::Inference(format!("head run: {e}")))?;
        let (shape, data) = outputs["probabilities"]
            .try_extract_tensor::<f32>()
            .map_err(|e| EngineError::Model(format!("head output `probabilities`: {e}")))?;
        if shape[..] != [rows as i64, self.classes as i64] {
            return Err(EngineError::Model(format!(
                "head output has shape {:?}, expected [{rows}, {}] (do the package's labels match the head?)",
                &shape[..],
                self.classes
            )));
        }
        Ok(data.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::is_out_of_memory;

    #[test]
    fn recognises_allocation_failures() {
        assert!(is_out_of_memory(
            "session run: Failed to allocate memory for requested buffer of size 123"
        ));
        assert!(is_out_of_memory("CUDA failure 2: out of memory"));
        assert!(!is_out_of_memory("Invalid input name: foo"));
    }
}
