//! Gradient rules of operators that reduce along axes: ReduceSum, ReduceMean, Softmax,
//! LogSoftmax and LayerNormalization (whose statistics are recomputed in the backward pass
//! in standard operators rather than taken from its optional outputs).

use super::emit::{Emitter, attr_float, attr_int, attr_ints, int, ints};
use super::{GradError, Node, Rule};

pub(super) const OPS: &[&str] = &[
    "ReduceSum",
    "ReduceMean",
    "Softmax",
    "LogSoftmax",
    "LayerNormalization",
];

pub(super) fn rule(op: &str) -> Option<Rule> {
    Some(match op {
        "ReduceSum" => reduce_sum,
        "ReduceMean" => reduce_mean,
        "Softmax" => softmax,
        "LogSoftmax" => log_softmax,
        "LayerNormalization" => layer_norm,
        _ => return None,
    })
}

type Grads = Result<Vec<Option<String>>, GradError>;

/// `g` (the reduced gradient) spread back over `x`'s shape. `axes`: the reduced axes as a
/// value, `None` for all axes.
fn spread(e: &mut Emitter, g: &str, x: &str, axes: Option<&str>, keepdims: bool) -> String {
    let kept = match axes {
        Some(axes) if !keepdims => e.op("Unsqueeze", &[g, axes], vec![]),
        _ => g.to_string(),
    };
    let shape = e.shape(x, None, None);
    e.op("Expand", &[&kept, &shape], vec![])
}

/// Opset 13+: the axes are an optional input.
fn reduce_sum(e: &mut Emitter, n: &Node<'_>) -> Grads {
    if !n.wants(0) {
        return Ok(vec![None, None]);
    }
    let g = n.g()?;
    let keepdims = attr_int(n.proto, "keepdims", 1) != 0;
    let noop = attr_int(n.proto, "noop_with_empty_axes", 0) != 0;
    let dx = match n.input(1) {
        None if noop => g.to_string(),
        axes => spread(e, g, n.x(0), axes, keepdims),
    };
    Ok(vec![Some(dx), None])
}

/// Opset 17: the axes are an attribute. The gradient is spread evenly over the reduced
/// elements.
fn reduce_mean(e: &mut Emitter, n: &Node<'_>) -> Grads {
    if !n.wants(0) {
        return Ok(vec![None]);
    }
    let g = n.g()?;
    let keepdims = attr_int(n.proto, "keepdims", 1) != 0;
    let axes = attr_ints(n.proto, "axes").map(|a| e.ints(&a));
    let spread = spread(e, g, n.x(0), axes.as_deref(), keepdims);
    let all = e.op("Size", &[n.x(0)], vec![]);
    let kept = e.op("Size", &[n.y()], vec![]);
    let all = e.to_float(&all);
    let kept = e.to_float(&kept);
    let count = e.div(&all, &kept);
    Ok(vec![Some(e.div(&spread, &count))])
}

/// dx = y ⊙ (g − Σ g⊙y) along the axis.
fn softmax(e: &mut Emitter, n: &Node<'_>) -> Grads {
    if !n.wants(0) {
        return Ok(vec![None]);
    }
    let g = n.g()?;
    let y = n.y();
    let axis = e.ints(&[attr_int(n.proto, "axis", -1)]);
    let gy = e.mul(g, y);
    let s = e.op("ReduceSum", &[&gy, &axis], vec![int("keepdims", 1)]);
    let centered = e.sub(g, &s);
    Ok(vec![Some(e.mul(y, &centered))])
}

/// dx = g − softmax(x) ⊙ Σ g along the axis.
fn log_softmax(e: &mut Emitter, n: &Node<'_>) -> Grads {
    if !n.wants(0) {
        return Ok(vec![None]);
    }
    let g = n.g()?;
    let axis = e.ints(&[attr_int(n.proto, "axis", -1)]);
    let p = e.op("Exp", &[n.y()], vec![]);
    let s = e.op("ReduceSum", &[g, &axis], vec![int("keepdims", 1)]);
    let ps = e.mul(&p, &s);
    Ok(vec![Some(e.sub(g, &ps))])
}

/// Normalised over axes [axis, rank): with x̂ = (x − μ)·r, r = 1/√(σ² + ε) and
/// h = g ⊙ scale, dx = r ⊙ (h − mean(h) − x̂ ⊙ mean(h ⊙ x̂)); dscale = Σ g ⊙ x̂ and
/// dbias = Σ g over the leading axes.
fn layer_norm(e: &mut Emitter, n: &Node<'_>) -> Grads {
    let g = n.g()?;
    let x = n.x(0);
    let axis = attr_int(n.proto, "axis", -1);
    let axis = if axis < 0 {
        axis
    } else {
        match e.ranks.get(x) {
            Some(&rank) => axis - rank as i64,
            None => {
                return Err(n.unsupported(
                    "a non-negative axis needs the input's rank, which is not known before running; export with axis=-1",
                ));
            }
        }
    };
    let axes: Vec<i64> = (axis..0).collect();
    let eps = attr_float(n.proto, "epsilon", 1e-5) as f64;
    let mean = |e: &mut Emitter, v: &str| {
        e.op(
            "ReduceMean",
            &[v],
            vec![ints("axes", &axes), int("keepdims", 1)],
        )
    };
    let mu = mean(e, x);
    let centered = e.sub(x, &mu);
    let sq = e.mul(&centered, &centered);
    let var = mean(e, &sq);
    let eps = e.scalar(eps);
    let var_eps = e.add(&var, &eps);
    let std = e.op("Sqrt", &[&var_eps], vec![]);
    let r = e.op("Reciprocal", &[&std], vec![]);
    let xhat = e.mul(&centered, &r);
    let dx = if n.wants(0) {
        let h = e.mul(g, n.x(1));
        let h_mean = mean(e, &h);
        let hx = e.mul(&h, &xhat);
        let hx_mean = mean(e, &hx);
        let t = e.mul(&xhat, &hx_mean);
        let d = e.sub(&h, &h_mean);
        let d = e.sub(&d, &t);
        Some(e.mul(&r, &d))
    } else {
        None
    };
    let dscale = if n.wants(1) {
        let gx = e.mul(g, &xhat);
        Some(e.reduce_to(&gx, n.x(1)))
    } else {
        None
    };
    let dbias = match n.input(2) {
        Some(bias) if n.wants(2) => Some(e.reduce_to(g, bias)),
        _ => None,
    };
    Ok(vec![dx, dscale, dbias])
}
