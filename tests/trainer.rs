//! The training loop on the real ONNX Runtime: a run stopped mid-epoch and resumed from its
//! checkpoint (through the safetensors bytes, in a new session) ends with exactly the
//! weights and loss curve of a run that never stopped; evaluation reports what it learned.

mod common;

use prost::Message;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sluice::job::{ClassWeightRule, ClassWeights};
use sluice::settings::EngineSettings;
use sluice::train::checkpoint::{self, Checkpoint};
use sluice::train::eval::{EvalMetrics, evaluate};
use sluice::train::reference::logits;
use sluice::train::trainer::{
    Dataset, Decay, Finish, Flow, Metric, Observer, Schedule, Selection, TrainConfig, fresh_start,
    train,
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
        class_weights: Vec::new(),
        selection: None,
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
        class_weights: Vec::new(),
        selection: None,
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

/// Scores each epoch end from a script (macro-F1), keeps every checkpoint, and stops after
/// the checkpoint at `stop_at` steps.
struct Scripted {
    scores: Vec<f64>,
    stop_at: Option<u64>,
    saved: Vec<Checkpoint>,
}

impl Observer for Scripted {
    fn on_epoch_end(&mut self, at: &Checkpoint) -> Result<Option<EvalMetrics>, TrainError> {
        let score = self.scores[at.epoch as usize - 1];
        Ok(Some(EvalMetrics {
            rows: 1,
            loss: 1.0 - score,
            accuracy: score,
            macro_f1: score,
        }))
    }

    fn on_checkpoint(&mut self, checkpoint: &Checkpoint) -> Result<Flow, TrainError> {
        // Through the bytes, as a resumed job reads it.
        let bytes = checkpoint::encode(checkpoint).unwrap();
        self.saved.push(checkpoint::decode("mem", &bytes).unwrap());
        Ok(if Some(checkpoint.state.step) == self.stop_at {
            Flow::Stop
        } else {
            Flow::Continue
        })
    }
}

#[test]
fn early_stopping_keeps_the_best_epoch_and_a_resumed_run_decides_the_same() {
    let layout = HeadLayout::linear(12, 3);
    let graph = build_step_graph(&layout, &AdamW::default()).encode_to_vec();
    let data = blobs(100, 3);
    let config = TrainConfig {
        batch_size: 25,
        epochs: 10,
        seed: 7,
        schedule: Schedule {
            peak_lr: 0.01,
            warmup_steps: 0,
            decay: Decay::Constant,
        },
        checkpoint_every: 3,
        dropout: 0.0,
        class_weights: Vec::new(),
        selection: Some(Selection {
            metric: Metric::MacroF1,
            patience: Some(3),
            min_delta: 0.01,
        }),
    };
    // Best at epoch 2; epochs 3-5 do not beat it by min_delta (0.705 is within it).
    let scores = vec![0.5, 0.7, 0.6, 0.705, 0.69, 0.95, 0.95, 0.95, 0.95, 0.95];
    let open = || StepSession::open("step", &graph, &engine()).unwrap();
    let start = fresh_start(&open(), layout.initial_parameters(7), config.seed).unwrap();
    let mut whole = Scripted {
        scores: scores.clone(),
        stop_at: None,
        saved: vec![],
    };
    let Finish::Completed(done) =
        train(&mut open(), &data, &config, start.clone(), &mut whole).unwrap()
    else {
        panic!("stopped");
    };
    assert_eq!((done.epoch, done.state.step, done.stale), (5, 20, 3));
    let best = done.best.as_ref().expect("a best epoch");
    assert_eq!((best.step, best.epoch, best.score), (8, 2, 0.7));
    let at_best = whole.saved.iter().find(|c| c.state.step == 8).unwrap();
    assert_eq!(best.params, at_best.state.params);
    assert_ne!(best.params, done.state.params);

    // Stopped mid-epoch 4 and resumed: the same decisions, the same weights.
    let mut first = Scripted {
        scores: scores.clone(),
        stop_at: Some(15),
        saved: vec![],
    };
    let Finish::Stopped(_) = train(&mut open(), &data, &config, start, &mut first).unwrap() else {
        panic!("the first leg did not stop");
    };
    let resume = first.saved.last().unwrap().clone();
    assert_eq!((resume.state.step, resume.stale), (15, 1));
    let mut second = Scripted {
        scores: scores.clone(),
        stop_at: None,
        saved: vec![],
    };
    let Finish::Completed(again) = train(&mut open(), &data, &config, resume, &mut second).unwrap()
    else {
        panic!("stopped");
    };
    assert_eq!(again, done);

    // Resumed from the checkpoint where patience ran out: it is already over.
    let mut third = Scripted {
        scores,
        stop_at: None,
        saved: vec![],
    };
    let Finish::Completed(over) =
        train(&mut open(), &data, &config, done.clone(), &mut third).unwrap()
    else {
        panic!("stopped");
    };
    assert_eq!(over, done);
    assert!(third.saved.is_empty(), "no step was taken");
}

/// Two overlapping classes, 9 rows in 10 of class 0.
fn imbalanced(rows: usize, seed: u64) -> Dataset {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let dim = 4;
    let mut features = Vec::new();
    let mut labels = Vec::new();
    for _ in 0..rows {
        let label = usize::from(rng.random::<f32>() < 0.1);
        let centre = if label == 0 { -0.4 } else { 0.4 };
        for _ in 0..dim {
            features.push(centre + rng.random_range(-1.0..1.0));
        }
        labels.push(label);
    }
    Dataset {
        dim,
        features,
        labels,
    }
}

#[test]
fn balanced_class_weights_lift_the_minority_class() {
    let layout = HeadLayout::linear(4, 2);
    let graph = build_step_graph(&layout, &AdamW::default()).encode_to_vec();
    let data = imbalanced(2000, 5);
    let held_out = imbalanced(2000, 6);
    let counts: Vec<u64> = (0..2)
        .map(|c| data.labels.iter().filter(|&&l| l == c).count() as u64)
        .collect();
    let labels = vec!["common".to_string(), "rare".to_string()];
    let balanced = ClassWeights::Rule(ClassWeightRule::Balanced).resolve(&labels, &counts);
    let run = |class_weights: Vec<f32>| {
        let config = TrainConfig {
            batch_size: 64,
            epochs: 5,
            seed: 3,
            schedule: Schedule {
                peak_lr: 0.05,
                warmup_steps: 0,
                decay: Decay::Cosine,
            },
            checkpoint_every: 0,
            dropout: 0.0,
            class_weights,
            selection: None,
        };
        let mut session = StepSession::open("step", &graph, &engine()).unwrap();
        let start = fresh_start(&session, layout.initial_parameters(3), 3).unwrap();
        let mut recorder = Recorder {
            stop_at: None,
            saved: vec![],
            steps: 0,
        };
        let Finish::Completed(done) =
            train(&mut session, &data, &config, start, &mut recorder).unwrap()
        else {
            panic!("stopped");
        };
        done
    };
    let plain = run(Vec::new());
    // Weights of exactly 1 are the unweighted loss, bit for bit.
    assert_eq!(run(vec![1.0, 1.0]).state.params, plain.state.params);
    let weighted = run(balanced.clone());
    let f1 = |done: &Checkpoint| {
        evaluate(&layout, &done.state.params, &held_out, &engine())
            .unwrap()
            .macro_f1
    };
    // Recall of each class on held-out rows; balanced weights trade the common class's
    // recall for the rare one's (what they are for), raising the balanced accuracy.
    let recalls = |done: &Checkpoint| {
        let logits = logits(
            &layout,
            &done.state.params,
            &held_out.features,
            held_out.rows(),
        );
        let mut hit = [0usize; 2];
        let mut all = [0usize; 2];
        for (r, &label) in held_out.labels.iter().enumerate() {
            let predicted = usize::from(logits[r * 2 + 1] > logits[r * 2]);
            all[label] += 1;
            hit[label] += usize::from(predicted == label);
        }
        [0, 1].map(|c| hit[c] as f64 / all[c] as f64)
    };
    let (plain_recall, weighted_recall) = (recalls(&plain), recalls(&weighted));
    let balanced_accuracy = |r: [f64; 2]| (r[0] + r[1]) / 2.0;
    println!(
        "balanced weights {balanced:?}: recall (common, rare) {plain_recall:.3?} -> {weighted_recall:.3?}, macro-F1 {:.3} -> {:.3}",
        f1(&plain),
        f1(&weighted)
    );
    assert!(
        weighted_recall[1] > plain_recall[1] + 0.1,
        "rare-class recall {:.3} unweighted, {:.3} balanced",
        plain_recall[1],
        weighted_recall[1]
    );
    assert!(
        balanced_accuracy(weighted_recall) > balanced_accuracy(plain_recall) + 0.03,
        "balanced accuracy {plain_recall:?} vs {weighted_recall:?}"
    );
}
