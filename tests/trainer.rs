//! The training loop on the real ONNX Runtime: a run stopped mid-epoch and resumed from its
//! checkpoint (through the safetensors bytes, in a new session) ends with exactly the
//! weights and loss curve of a run that never stopped; evaluation reports what it learned.

mod common;

use prost::Message;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sluice::settings::EngineSettings;
use sluice::train::checkpoint::{self, Checkpoint};
use sluice::train::eval::evaluate;
use sluice::train::trainer::{
    Dataset, Decay, Finish, Flow, Observer, Schedule, TrainConfig, fresh_start, train,
};
use sluice::train::{AdamW, HeadLayout, StepSession, TrainError, build_step_graph};

fn engine() -> EngineSettings {
    common::cpu_engine()
}

/// Three Gaussian blobs in 12 dimensions: learnable, not trivially.
fn blobs(rows: usize, seed: u64) -> Dataset {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let dim = 12;
    let centres: Vec<Vec<f32>> = (0..3)
        .map(|_| (0..dim).map(|_| rng.random_range(-1.0..1.0)).collect())
        .collect();
    let mut features = Vec::new();
    let mut labels = Vec::new();
    for _ in 0..rows {
        let label = rng.random_range(0..3);
        for centre in &centres[label] {
            features.push(centre + rng.random_range(-0.8..0.8));
        }
        labels.push(label);
    }
    Dataset {
        dim,
        features,
        labels,
    }
}

/// Keeps every checkpoint's bytes; stops after the checkpoint at `stop_at` steps.
struct Recorder {
    stop_at: Option<u64>,
    saved: Vec<Vec<u8>>,
    steps: u64,
}

impl Observer for Recorder {
    fn on_checkpoint(&mut self, checkpoint: &Checkpoint) -> Result<Flow, TrainError> {
        self.saved.push(checkpoint::encode(checkpoint).unwrap());
        self.steps = checkpoint.state.step;
        Ok(if Some(checkpoint.state.step) == self.stop_at {
            Flow::Stop
        } else {
            Flow::Continue
        })
    }
}

#[test]
fn a_resumed_run_ends_with_the_weights_of_an_uninterrupted_one() {
    let layout = HeadLayout {
        input_dim: 12,
        classes: 3,
        hidden: vec![16],
        dropout: 0.2,
    };
    let graph = build_step_graph(&layout, &AdamW::default()).encode_to_vec();
    let data = blobs(300, 1);
    let config = TrainConfig {
        batch_size: 32,
        epochs: 4,
        seed: 42,
        schedule: Schedule {
            peak_lr: 0.02,
            warmup_steps: 5,
            decay: Decay::Cosine,
        },
        checkpoint_every: 7,
        dropout: layout.dropout,
    };
    let open = || StepSession::open("step", &graph, &engine()).unwrap();

    let mut session = open();
    let start = fresh_start(&session, layout.initial_parameters(42), config.seed).unwrap();
    let mut whole = Recorder {
        stop_at: None,
        saved: vec![],
        steps: 0,
    };
    let Finish::Completed(uninterrupted) =
        train(&mut session, &data, &config, start.clone(), &mut whole).unwrap()
    else {
        panic!("the uninterrupted run was stopped");
    };
    assert_eq!(uninterrupted.state.step, 40); // 10 batches × 4 epochs

    // Stopped at step 21 (mid-epoch 3), resumed from the bytes in a fresh session.
    let mut first = Recorder {
        stop_at: Some(21),
        saved: vec![],
        steps: 0,
    };
    let mut session = open();
    let Finish::Stopped(_) = train(&mut session, &data, &config, start, &mut first).unwrap() else {
        panic!("the first leg did not stop");
    };
    let resumed = checkpoint::decode("step-21", first.saved.last().unwrap()).unwrap();
    assert_eq!(
        (resumed.state.step, resumed.epoch, resumed.cursor),
        (21, 2, 1)
    );
    let mut session = open();
    let mut second = Recorder {
        stop_at: None,
        saved: vec![],
        steps: 0,
    };
    let Finish::Completed(finished) =
        train(&mut session, &data, &config, resumed, &mut second).unwrap()
    else {
        panic!("the resumed run was stopped");
    };

    assert_eq!(finished.state.step, uninterrupted.state.step);
    for (name, tensor) in &uninterrupted.state.params {
        let max = tensor
            .data
            .iter()
            .zip(&finished.state.params[name].data)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(max <= 1e-6, "{name} differs by {max}");
    }
    assert_eq!(
        finished.losses, uninterrupted.losses,
        "loss curve without a jump"
    );
    assert_eq!(finished.state.opt, uninterrupted.state.opt);

    // It learned the blobs.
    let held_out = blobs(300, 1);
    let metrics = evaluate(&layout, &finished.state.params, &held_out, &engine()).unwrap();
    assert!(metrics.accuracy > 0.9, "{metrics:?}");
    assert!(metrics.macro_f1 > 0.9, "{metrics:?}");
    let first_loss = uninterrupted.losses[0];
    assert!(
        metrics.loss < first_loss as f64 * 0.5,
        "{metrics:?} vs first loss {first_loss}"
    );
}

#[test]
fn labels_out_of_range_and_empty_data_are_refused() {
    let layout = HeadLayout::linear(12, 3);
    let graph = build_step_graph(&layout, &AdamW::default()).encode_to_vec();
    let mut session = StepSession::open("step", &graph, &engine()).unwrap();
    let config = TrainConfig {
        batch_size: 8,
        epochs: 1,
        seed: 1,
        schedule: Schedule {
            peak_lr: 0.01,
            warmup_steps: 0,
            decay: Decay::Constant,
        },
        checkpoint_every: 0,
        dropout: 0.0,
    };
    let mut observer = Recorder {
        stop_at: None,
        saved: vec![],
        steps: 0,
    };
    let mut bad = blobs(20, 2);
    bad.labels[3] = 7;
    let start = fresh_start(&session, layout.initial_parameters(1), 1).unwrap();
    let err = train(&mut session, &bad, &config, start.clone(), &mut observer).unwrap_err();
    assert!(err.to_string().contains("label index 7"), "{err}");
    let empty = Dataset {
        dim: 12,
        features: vec![],
        labels: vec![],
    };
    let err = train(&mut session, &empty, &config, start, &mut observer).unwrap_err();
    assert!(err.to_string().contains("empty"), "{err}");
}
