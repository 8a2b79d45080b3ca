//! Training checkpoints as safetensors: parameters, optimiser state, the loss curve so far,
//! and in the header the step, the data cursor and the random generator's position, so a
//! resumed job continues exactly where the checkpoint was taken.

use std::collections::HashMap;

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use super::head::{Tensor, Tensors};
use super::runner::TrainState;

const FORMAT: &str = "sluice.checkpoint.v1";
const PARAM: &str = "param.";
const LOSS_CURVE: &str = "curve.loss";
const BEST: &str = "best.";

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("checkpoint {what}: {reason}")]
    Corrupt { what: String, reason: String },
}

/// Where the job stood when the checkpoint was taken.
#[derive(Debug, Clone, PartialEq)]
pub struct Checkpoint {
    pub state: TrainState,
    /// The epoch in progress (0-based).
    pub epoch: u64,
    /// Batches of this epoch already trained on.
    pub cursor: u64,
    /// The generator that shuffles batches and draws dropout masks, as it was.
    pub rng: ChaCha8Rng,
    /// Mean loss of every step so far (the curve a resumed job keeps drawing).
    pub losses: Vec<f32>,
    /// The best evaluated epoch end so far, when the job selects or stops early by it.
    pub best: Option<Best>,
    /// Evaluations since `best` last improved (what early stopping counts).
    pub stale: u64,
}

/// The best evaluated epoch end so far and its weights.
#[derive(Debug, Clone, PartialEq)]
pub struct Best {
    pub step: u64,
    /// Epochs completed at that step.
    pub epoch: u64,
    /// The selection metric's value there.
    pub score: f64,
    pub params: Tensors,
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// The checkpoint as one safetensors file.
pub fn encode(checkpoint: &Checkpoint) -> Result<Vec<u8>, CheckpointError> {
    let corrupt = |reason: String| CheckpointError::Corrupt {
        what: "encode".into(),
        reason,
    };
    let mut owned: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, t) in &checkpoint.state.params {
        owned.push((
            format!("{PARAM}{name}"),
            t.shape.clone(),
            f32_bytes(&t.data),
        ));
    }
    for (name, t) in &checkpoint.state.opt {
        owned.push((name.clone(), t.shape.clone(), f32_bytes(&t.data)));
    }
    if let Some(best) = &checkpoint.best {
        for (name, t) in &best.params {
            owned.push((format!("{BEST}{name}"), t.shape.clone(), f32_bytes(&t.data)));
        }
    }
    owned.push((
        LOSS_CURVE.into(),
        vec![checkpoint.losses.len()],
        f32_bytes(&checkpoint.losses),
    ));
    let views = owned
        .iter()
        .map(|(name, shape, bytes)| {
            TensorView::new(Dtype::F32, shape.clone(), bytes)
                .map(|view| (name.clone(), view))
                .map_err(|e| corrupt(format!("{name}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let rng = &checkpoint.rng;
    let mut metadata = HashMap::from([
        ("format".to_string(), FORMAT.to_string()),
        ("step".to_string(), checkpoint.state.step.to_string()),
        ("epoch".to_string(), checkpoint.epoch.to_string()),
        ("cursor".to_string(), checkpoint.cursor.to_string()),
        ("rng.seed".to_string(), hex::encode(rng.get_seed())),
        ("rng.stream".to_string(), rng.get_stream().to_string()),
        ("rng.word_pos".to_string(), rng.get_word_pos().to_string()),
        ("stale".to_string(), checkpoint.stale.to_string()),
    ]);
    if let Some(best) = &checkpoint.best {
        metadata.insert("best.step".into(), best.step.to_string());
        metadata.insert("best.epoch".into(), best.epoch.to_string());
        // Bit-exact, so a resumed run compares against the very same number.
        metadata.insert(
            "best.score".into(),
            format!("{:016x}", best.score.to_bits()),
        );
    }
    safetensors::serialize(views, Some(metadata)).map_err(|e| corrupt(e.to_string()))
}

/// Reads a checkpoint written by `encode`; `what` names it in errors (its S3 URI).
pub fn decode(what: &str, bytes: &[u8]) -> Result<Checkpoint, CheckpointError> {
    let corrupt = |reason: String| CheckpointError::Corrupt {
        what: what.to_string(),
        reason,
    };
    let (_, header) =
        SafeTensors::read_metadata(bytes).map_err(|e| corrupt(format!("not safetensors: {e}")))?;
    let meta = header
        .metadata()
        .clone()
        .ok_or_else(|| corrupt("no metadata".into()))?;
    if meta.get("format").map(String::as_str) != Some(FORMAT) {
        return Err(corrupt(format!(
            "format is {:?}, expected {FORMAT}",
            meta.get("format")
        )));
    }
    let number = |key: &str| -> Result<u128, CheckpointError> {
        meta.get(key)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| corrupt(format!("metadata `{key}` missing or not a number")))
    };
    let seed: [u8; 32] = meta
        .get("rng.seed")
        .and_then(|s| hex::decode(s).ok())
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| corrupt("metadata `rng.seed` missing or malformed".into()))?;
    let mut rng = ChaCha8Rng::from_seed(seed);
    rng.set_stream(number("rng.stream")? as u64);
    rng.set_word_pos(number("rng.word_pos")?);
    let tensors = SafeTensors::deserialize(bytes).map_err(|e| corrupt(e.to_string()))?;
    let mut params = Tensors::new();
    let mut opt = Tensors::new();
    let mut losses = Vec::new();
    let mut best_params = Tensors::new();
    for (name, view) in tensors.tensors() {
        if view.dtype() != Dtype::F32 {
            return Err(corrupt(format!(
                "{name} is {:?}, expected F32",
                view.dtype()
            )));
        }
        let data: Vec<f32> = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let tensor = Tensor {
            shape: view.shape().to_vec(),
            data,
        };
        if name == LOSS_CURVE {
            losses = tensor.data;
        } else if let Some(param) = name.strip_prefix(PARAM) {
            params.insert(param.to_string(), tensor);
        } else if let Some(param) = name.strip_prefix(BEST) {
            best_params.insert(param.to_string(), tensor);
        } else {
            opt.insert(name, tensor);
        }
    }
    if params.is_empty() {
        return Err(corrupt("holds no parameters".into()));
    }
    let best = match meta.get("best.step") {
        None => None,
        Some(_) => {
            let score = meta
                .get("best.score")
                .and_then(|s| u64::from_str_radix(s, 16).ok())
                .map(f64::from_bits)
                .ok_or_else(|| corrupt("metadata `best.score` missing or malformed".into()))?;
            if best_params.len() != params.len() {
                return Err(corrupt(format!(
                    "holds {} best parameters for {} parameters",
                    best_params.len(),
                    params.len()
                )));
            }
            Some(Best {
                step: number("best.step")? as u64,
                epoch: number("best.epoch")? as u64,
                score,
                params: best_params,
            })
        }
    };
    // Checkpoints written before early stopping existed have no count: nothing was stale.
    let stale = match meta.get("stale") {
        Some(_) => number("stale")? as u64,
        None => 0,
    };
    Ok(Checkpoint {
        state: TrainState {
            params,
            opt,
            step: number("step")? as u64,
        },
        epoch: number("epoch")? as u64,
        cursor: number("cursor")? as u64,
        rng,
        losses,
        best,
        stale,
    })
}

#[cfg(test)]
mod tests {
    use rand::Rng;

    use super::*;
    use crate::train::HeadLayout;

    #[test]
    fn a_checkpoint_round_trips_exactly_and_the_generator_continues() {
        let layout = HeadLayout {
            input_dim: 8,
            classes: 3,
            hidden: vec![4],
            dropout: 0.1,
        };
        let params = layout.initial_parameters(1);
        let opt: Tensors = params
            .iter()
            .map(|(k, t)| {
                (
                    format!("opt.m.{k}"),
                    Tensor {
                        shape: t.shape.clone(),
                        data: t.data.iter().map(|v| v * 0.5).collect(),
                    },
                )
            })
            .collect();
        let mut rng = ChaCha8Rng::seed_from_u64(42);
        let _: Vec<u32> = (0..17).map(|_| rng.random()).collect();
        let checkpoint = Checkpoint {
            state: TrainState {
                params,
                opt,
                step: 123,
            },
            epoch: 2,
            cursor: 7,
            rng: rng.clone(),
            losses: vec![0.9, 0.7, 0.5],
            best: None,
            stale: 0,
        };
        let bytes = encode(&checkpoint).unwrap();
        let mut back = decode("mem", &bytes).unwrap();
        assert_eq!(back, checkpoint);
        let with_best = Checkpoint {
            best: Some(Best {
                step: 100,
                epoch: 1,
                score: 0.1 + 0.2,
                params: layout.initial_parameters(2),
            }),
            stale: 1,
            ..checkpoint.clone()
        };
        let again = decode("mem", &encode(&with_best).unwrap()).unwrap();
        assert_eq!(again, with_best);
        let continued: Vec<u32> = (0..5).map(|_| back.rng.random()).collect();
        let expected: Vec<u32> = (0..5).map(|_| rng.random()).collect();
        assert_eq!(continued, expected);
    }

    #[test]
    fn damaged_checkpoints_are_refused_with_their_name() {
        let err = decode("s3://b/ckpt/step-1.safetensors", b"garbage").unwrap_err();
        assert!(
            err.to_string().contains("s3://b/ckpt/step-1.safetensors"),
            "{err}"
        );
    }
}
