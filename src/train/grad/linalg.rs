//! Gradient rules of matrix products: MatMul (batched, with broadcast batch axes summed back
//! to each operand) and Gemm (with its transposes, alpha, beta and broadcast bias).

use super::emit::{Emitter, attr_float, attr_int, float, int, ints};
use super::{GradError, Node, Rule};

pub(super) const OPS: &[&str] = &["MatMul", "Gemm"];

pub(super) fn rule(op: &str) -> Option<Rule> {
    Some(match op {
        "MatMul" => matmul,
        "Gemm" => gemm,
        _ => return None,
    })
}

type Grads = Result<Vec<Option<String>>, GradError>;

/// Y = A·B over the last two axes: dA = G·Bᵀ, dB = Aᵀ·G, each summed over the batch axes
/// its operand was broadcast along. Operands must have rank ≥ 2 (1-D MatMul operands are
/// not supported).
fn matmul(e: &mut Emitter, n: &Node<'_>) -> Grads {
    let g = n.g()?;
    let (a, b) = (n.x(0), n.x(1));
    for x in [a, b] {
        if e.ranks.get(x).is_some_and(|&r| r < 2) {
            return Err(n.unsupported(&format!(
                "operand `{x}` is 1-D; only operands of rank 2 or more are supported"
            )));
        }
    }
    let da = if n.wants(0) {
        let bt = e.swap_last2(b);
        let full = e.op("MatMul", &[g, &bt], vec![]);
        Some(e.reduce_to(&full, a))
    } else {
        None
    };
    let db = if n.wants(1) {
        let at = e.swap_last2(a);
        let full = e.op("MatMul", &[&at, g], vec![]);
        Some(e.reduce_to(&full, b))
    } else {
        None
    };
    Ok(vec![da, db])
}

/// Y = α·A'·B' + β·C with A' = transA ? Aᵀ : A (B' likewise): dA' = α·G·B'ᵀ,
/// dB' = α·A'ᵀ·G, dC = β·G summed to C's shape.
fn gemm(e: &mut Emitter, n: &Node<'_>) -> Grads {
    let g = n.g()?;
    let (a, b) = (n.x(0), n.x(1));
    let alpha = attr_float(n.proto, "alpha", 1.0);
    let beta = attr_float(n.proto, "beta", 1.0);
    let trans_a = attr_int(n.proto, "transA", 0) != 0;
    let trans_b = attr_int(n.proto, "transB", 0) != 0;
    let gemm = |e: &mut Emitter, x: &str, y: &str, tx: bool, ty: bool| {
        e.op(
            "Gemm",
            &[x, y],
            vec![
                float("alpha", alpha),
                int("transA", tx as i64),
                int("transB", ty as i64),
            ],
        )
    };
    let transpose = |e: &mut Emitter, x: &str| e.op("Transpose", &[x], vec![ints("perm", &[1, 0])]);
    let da = if n.wants(0) {
        // G·B'ᵀ: B'ᵀ is B itself when transB, else Bᵀ.
        let d = gemm(e, g, b, false, !trans_b);
        Some(if trans_a { transpose(e, &d) } else { d })
    } else {
        None
    };
    let db = if n.wants(1) {
        // A'ᵀ·G: A'ᵀ is A itself when transA, else Aᵀ.
        let d = gemm(e, a, g, !trans_a, false);
        Some(if trans_b { transpose(e, &d) } else { d })
    } else {
        None
    };
    let dc = match n.input(2) {
        Some(c) if n.wants(2) => {
            let scaled = if beta == 1.0 {
                g.to_string()
            } else {
                let s = e.scalar(beta as f64);
                e.mul(g, &s)
            };
            Some(e.reduce_to(&scaled, c))
        }
        _ => None,
    };
    Ok(vec![da, db, dc])
}
