//! Gradient graphs against finite differences, in float64 on the real ONNX Runtime: every
//! operator rule on its own (with broadcasting, batching and odd attributes), then a whole
//! 2-layer BERT-style encoder exported the way the L3 model is (shape arithmetic, masks,
//! Erf GELU, mean pooling), with a linear head and softmax cross-entropy.
//! Run with `cargo test --test grad_check -- --nocapture` to see the errors printed.

mod common;
#[path = "grad_check/harness.rs"]
mod harness;

use harness::{Case, case, check, worst};
use sluice::train::builder::{int, ints};
use sluice::train::grad::emit::float;

/// Relative to each gradient's largest element; f64 central differences with h = 1e-5 are
/// good to about 1e-9 here.
const TOLERANCE: f64 = 1e-6;

fn assert_ok(label: &str, c: &Case) -> f64 {
    let errors = check(c);
    let w = worst(&errors);
    println!("{label:<28} max relative error {w:.2e}");
    assert!(w < TOLERANCE, "{label}: {errors:?}");
    w
}

/// One operator `op` over the parameters, its output shaped `out`, loss Σ y⊙R.
fn single(
    label: &str,
    params: &[(&str, &[i64])],
    range: (f64, f64),
    out: &[i64],
    build: impl FnOnce(&mut Case, &[String]) -> String,
) -> f64 {
    let (mut c, names) = case(label, params, range);
    let y = build(&mut c, &names);
    c.weighted_sum(&y, out);
    assert_ok(label, &c)
}

#[test]
fn broadcasting_arithmetic_matches_finite_differences() {
    let pm = (-1.0, 1.0);
    let pos = (0.5, 1.5);
    single(
        "Add [2,3,4]+[4]",
        &[("a", &[2, 3, 4]), ("b", &[4])],
        pm,
        &[2, 3, 4],
        |c, p| c.e.add(&p[0], &p[1]),
    );
    single(
        "Add [3,1]+[2,1,4]",
        &[("a", &[3, 1]), ("b", &[2, 1, 4])],
        pm,
        &[2, 3, 4],
        |c, p| c.e.add(&p[0], &p[1]),
    );
    single(
        "Sub [2,3]-[1,3]",
        &[("a", &[2, 3]), ("b", &[1, 3])],
        pm,
        &[2, 3],
        |c, p| c.e.sub(&p[0], &p[1]),
    );
    single(
        "Mul [2,3,4]*[3,1]",
        &[("a", &[2, 3, 4]), ("b", &[3, 1])],
        pm,
        &[2, 3, 4],
        |c, p| c.e.mul(&p[0], &p[1]),
    );
    single(
        "Div [2,3]/[3]",
        &[("a", &[2, 3]), ("b", &[3])],
        pos,
        &[2, 3],
        |c, p| c.e.div(&p[0], &p[1]),
    );
    single(
        "Pow [2,3]^[2,3]",
        &[("a", &[2, 3]), ("b", &[2, 3])],
        pos,
        &[2, 3],
        |c, p| c.e.op("Pow", &[&p[0], &p[1]], vec![]),
    );
    single("Pow x^2 (const)", &[("a", &[2, 3])], pm, &[2, 3], |c, p| {
        let two = c.e.scalar(2.0);
        c.e.op("Pow", &[&p[0], &two], vec![])
    });
    single(
        "Sum of 3, broadcast",
        &[("a", &[2, 3]), ("b", &[3]), ("c", &[2, 1])],
        pm,
        &[2, 3],
        |c, p| c.e.op("Sum", &[&p[0], &p[1], &p[2]], vec![]),
    );
    single(
        "Expand [3,1]->[2,3,4]",
        &[("a", &[3, 1])],
        pm,
        &[2, 3, 4],
        |c, p| {
            let shape = c.e.ints(&[2, 3, 4]);
            c.e.op("Expand", &[&p[0], &shape], vec![])
        },
    );
    single(
        "Where mask, broadcast",
        &[("a", &[2, 4]), ("b", &[1, 4])],
        pm,
        &[2, 4],
        |c, p| {
            let m = c.int64("mask", &[2, 4], &[1, 0, 1, 1, 0, 0, 1, 0]);
            let zero = c.e.ints(&[0]);
            let cond = c.e.op("Greater", &[&m, &zero], vec![]);
            c.e.op("Where", &[&cond, &p[0], &p[1]], vec![])
        },
    );
}

#[test]
fn unary_functions_match_finite_differences() {
    let pm = (-1.5, 1.5);
    let pos = (0.5, 2.0);
    for (op, range) in [
        ("Erf", (-2.0, 2.0)),
        ("Sqrt", pos),
        ("Exp", pm),
        ("Log", pos),
        ("Tanh", pm),
        ("Sigmoid", pm),
        ("Relu", pm),
        ("Neg", pm),
        ("Reciprocal", pos),
        ("Abs", pm),
        ("Identity", pm),
    ] {
        single(op, &[("x", &[2, 5])], range, &[2, 5], |c, p| {
            c.e.op(op, &[&p[0]], vec![])
        });
    }
    single(
        "Cast double->double",
        &[("x", &[2, 3])],
        pm,
        &[2, 3],
        |c, p| c.e.op("Cast", &[&p[0]], vec![int("to", 11)]),
    );
    single(
        "Clip [-0.5, 0.7]",
        &[("x", &[3, 4])],
        pm,
        &[3, 4],
        |c, p| {
            let lo = c.e.scalar(-0.5);
            let hi = c.e.scalar(0.7);
            c.e.op("Clip", &[&p[0], &lo, &hi], vec![])
        },
    );
    single(
        "GELU (erf, exported)",
        &[("x", &[2, 6])],
        (-3.0, 3.0),
        &[2, 6],
        |c, p| {
            let root2 = c.e.scalar(std::f64::consts::SQRT_2);
            let one = c.e.scalar(1.0);
            let half = c.e.scalar(0.5);
            let d = c.e.div(&p[0], &root2);
            let erf = c.e.op("Erf", &[&d], vec![]);
            let a = c.e.add(&erf, &one);
            let m = c.e.mul(&p[0], &a);
            c.e.mul(&m, &half)
        },
    );
}

#[test]
fn matrix_products_match_finite_differences() {
    let pm = (-1.0, 1.0);
    single(
        "MatMul [2,2,3,4]@[4,5]",
        &[("a", &[2, 2, 3, 4]), ("b", &[4, 5])],
        pm,
        &[2, 2, 3, 5],
        |c, p| c.e.op("MatMul", &[&p[0], &p[1]], vec![]),
    );
    single(
        "MatMul [3,4]@[2,4,5]",
        &[("a", &[3, 4]), ("b", &[2, 4, 5])],
        pm,
        &[2, 3, 5],
        |c, p| c.e.op("MatMul", &[&p[0], &p[1]], vec![]),
    );
    // Activations of unknown rank take the dynamic transpose.
    single(
        "MatMul act [2,1,3,4]@[2,4,2]",
        &[("a", &[2, 1, 3, 4]), ("b", &[2, 4, 2])],
        pm,
        &[2, 2, 3, 2],
        |c, p| {
            let a = c.e.op("Identity", &[&p[0]], vec![]);
            let b = c.e.op("Identity", &[&p[1]], vec![]);
            c.e.op("MatMul", &[&a, &b], vec![])
        },
    );
    for (ta, tb) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
        let a: &[i64] = if ta == 1 { &[4, 2] } else { &[2, 4] };
        let b: &[i64] = if tb == 1 { &[3, 4] } else { &[4, 3] };
        single(
            &format!("Gemm transA={ta} transB={tb}"),
            &[("a", a), ("b", b), ("c", &[3])],
            pm,
            &[2, 3],
            |c, p| {
                c.e.op(
                    "Gemm",
                    &[&p[0], &p[1], &p[2]],
                    vec![
                        float("alpha", 0.7),
                        float("beta", 1.3),
                        int("transA", ta),
                        int("transB", tb),
                    ],
                )
            },
        );
    }
}

#[test]
fn reductions_and_normalisation_match_finite_differences() {
    let pm = (-1.0, 1.0);
    single(
        "Softmax axis=-1",
        &[("x", &[2, 3, 4])],
        pm,
        &[2, 3, 4],
        |c, p| c.e.op("Softmax", &[&p[0]], vec![int("axis", -1)]),
    );
    single(
        "Softmax axis=1",
        &[("x", &[2, 3, 4])],
        pm,
        &[2, 3, 4],
        |c, p| c.e.op("Softmax", &[&p[0]], vec![int("axis", 1)]),
    );
    single(
        "LogSoftmax axis=-1",
        &[("x", &[3, 4])],
        pm,
        &[3, 4],
        |c, p| c.e.op("LogSoftmax", &[&p[0]], vec![int("axis", -1)]),
    );
    single(
        "LayerNormalization axis=-1",
        &[("x", &[2, 3, 4]), ("scale", &[4]), ("bias", &[4])],
        pm,
        &[2, 3, 4],
        |c, p| {
            c.e.op(
                "LayerNormalization",
                &[&p[0], &p[1], &p[2]],
                vec![int("axis", -1), float("epsilon", 1e-5)],
            )
        },
    );
    single(
        "LayerNormalization axis=1",
        &[("x", &[2, 3, 4]), ("scale", &[3, 4]), ("bias", &[3, 4])],
        pm,
        &[2, 3, 4],
        |c, p| {
            c.e.op(
                "LayerNormalization",
                &[&p[0], &p[1], &p[2]],
                vec![int("axis", 1), float("epsilon", 1e-12)],
            )
        },
    );
    single(
        "ReduceSum axes=[1] keep=0",
        &[("x", &[2, 3, 4])],
        pm,
        &[2, 4],
        |c, p| {
            let axes = c.e.ints(&[1]);
            c.e.op("ReduceSum", &[&p[0], &axes], vec![int("keepdims", 0)])
        },
    );
    single(
        "ReduceSum axes=[-1] keep=1",
        &[("x", &[2, 3, 4])],
        pm,
        &[2, 3, 1],
        |c, p| {
            let axes = c.e.ints(&[-1]);
            c.e.op("ReduceSum", &[&p[0], &axes], vec![])
        },
    );
    single(
        "ReduceSum all keep=0",
        &[("x", &[2, 3])],
        pm,
        &[],
        |c, p| c.e.op("ReduceSum", &[&p[0]], vec![int("keepdims", 0)]),
    );
    single(
        "ReduceMean axes=[0,2] keep=0",
        &[("x", &[2, 3, 4])],
        pm,
        &[3],
        |c, p| {
            c.e.op(
                "ReduceMean",
                &[&p[0]],
                vec![ints("axes", &[0, 2]), int("keepdims", 0)],
            )
        },
    );
    single(
        "ReduceMean all keep=1",
        &[("x", &[2, 3])],
        pm,
        &[1, 1],
        |c, p| c.e.op("ReduceMean", &[&p[0]], vec![]),
    );
}

#[test]
fn shape_operators_match_finite_differences() {
    let pm = (-1.0, 1.0);
    single(
        "Reshape [2,6]->[3,4]",
        &[("x", &[2, 6])],
        pm,
        &[3, 4],
        |c, p| {
            let s = c.e.ints(&[3, -1]);
            c.e.op("Reshape", &[&p[0], &s], vec![])
        },
    );
    single(
        "Flatten axis=1",
        &[("x", &[2, 3, 2])],
        pm,
        &[2, 6],
        |c, p| c.e.op("Flatten", &[&p[0]], vec![int("axis", 1)]),
    );
    single(
        "Unsqueeze+Squeeze",
        &[("x", &[2, 3])],
        pm,
        &[2, 3, 1],
        |c, p| {
            let a = c.e.ints(&[0, 3]);
            let u = c.e.op("Unsqueeze", &[&p[0], &a], vec![]);
            let z = c.e.ints(&[0]);
            c.e.op("Squeeze", &[&u, &z], vec![])
        },
    );
    single(
        "Transpose [0,2,3,1]",
        &[("x", &[2, 3, 2, 4])],
        pm,
        &[2, 2, 4, 3],
        |c, p| {
            c.e.op("Transpose", &[&p[0]], vec![ints("perm", &[0, 2, 3, 1])])
        },
    );
    single(
        "Transpose (reverse)",
        &[("x", &[2, 3, 4])],
        pm,
        &[4, 3, 2],
        |c, p| c.e.op("Transpose", &[&p[0]], vec![]),
    );
    single(
        "Concat axis=-1",
        &[("a", &[2, 3]), ("b", &[2, 2])],
        pm,
        &[2, 5],
        |c, p| c.e.op("Concat", &[&p[0], &p[1]], vec![int("axis", -1)]),
    );
    single(
        "Concat axis=0 (same input)",
        &[("a", &[2, 3])],
        pm,
        &[4, 3],
        |c, p| c.e.op("Concat", &[&p[0], &p[0]], vec![int("axis", 0)]),
    );
    single(
        "Slice strided, negative",
        &[("x", &[4, 5])],
        pm,
        &[2, 3],
        |c, p| {
            let starts = c.e.ints(&[1, -4]);
            let ends = c.e.ints(&[10, 4]);
            let axes = c.e.ints(&[0, 1]);
            let steps = c.e.ints(&[2, 1]);
            c.e.op("Slice", &[&p[0], &starts, &ends, &axes, &steps], vec![])
        },
    );
    single(
        "Gather axis=0 (embedding)",
        &[("table", &[5, 3])],
        pm,
        &[2, 3, 3],
        |c, p| {
            let ids = c.int64("ids", &[2, 3], &[0, 2, 2, 4, -1, 0]);
            c.e.op("Gather", &[&p[0], &ids], vec![])
        },
    );
    single(
        "Gather axis=1, repeats",
        &[("x", &[2, 4, 3])],
        pm,
        &[2, 3, 3],
        |c, p| {
            let ids = c.int64("ids", &[3], &[3, 0, 3]);
            c.e.op("Gather", &[&p[0], &ids], vec![int("axis", 1)])
        },
    );
    single(
        "Gather scalar index",
        &[("x", &[4, 3])],
        pm,
        &[3],
        |c, p| {
            let i = c.int64("i", &[], &[2]);
            c.e.op("Gather", &[&p[0], &i], vec![])
        },
    );
}

/// Small weights so the GELU inputs stay where the Erf series is exact.
#[test]
fn a_two_layer_encoder_matches_finite_differences() {
    let (mut c, _) = case("encoder", &[], (0.0, 1.0));
    let params = encoder::build(&mut c);
    c.params = params;
    let errors = check(&c);
    let w = worst(&errors);
    let mut sorted: Vec<_> = errors.iter().collect();
    sorted.sort_by(|a, b| b.1.total_cmp(a.1));
    for (p, err) in sorted.iter().take(5) {
        println!("  {p:<24} {err:.2e}");
    }
    println!(
        "2-layer encoder ({} parameter tensors, {} values): max relative error {w:.2e}",
        c.params.len(),
        c.params.iter().map(|p| p.2.len()).sum::<usize>()
    );
    assert!(w < TOLERANCE, "{errors:?}");
}

#[path = "grad_check/encoder.rs"]
mod encoder;
#[path = "grad_check/step.rs"]
mod step;

/// One step graph of the tiny encoder (all parameters trained) against AdamW on
/// finite-difference gradients, then ten steps on the batch.
#[test]
fn a_fine_tuning_step_graph_matches_adamw_and_lowers_the_loss() {
    let (mut c, _) = case("encoder-step", &[], (0.0, 1.0));
    c.params = encoder::build(&mut c);
    let (worst, losses) = step::check(&c, 10);
    println!(
        "encoder step: max |update - AdamW(FD grads)| / lr = {worst:.2e}; loss {:.4} -> {:.4} over {} steps",
        losses[0],
        losses[losses.len() - 1],
        losses.len()
    );
    assert!(worst < 1e-5, "{worst}");
    assert!(losses[losses.len() - 1] < losses[0] - 0.05, "{losses:?}");
}
