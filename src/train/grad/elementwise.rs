//! Gradient rules of elementwise operators: the broadcasting arithmetic (Add, Sub, Mul,
//! Div, Pow, Sum, Where, Expand), whose gradients are summed back to each operand's shape,
//! and the unary functions (Erf for GELU, Sqrt, Exp, Log, Tanh, Relu, Cast, Clip, …).

use super::emit::Emitter;
use super::{GradError, Node, Rule};

pub(super) const OPS: &[&str] = &[
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Pow",
    "Sum",
    "Where",
    "Expand",
    "Neg",
    "Identity",
    "Sqrt",
    "Exp",
    "Log",
    "Erf",
    "Tanh",
    "Sigmoid",
    "Relu",
    "Reciprocal",
    "Abs",
    "Cast",
    "Clip",
];

pub(super) fn rule(op: &str) -> Option<Rule> {
    Some(match op {
        "Add" => add,
        "Sub" => sub,
        "Mul" => mul,
        "Div" => div,
        "Pow" => pow,
        "Sum" => sum,
        "Where" => where_,
        "Expand" => expand,
        "Neg" => neg,
        "Identity" => identity,
        "Sqrt" => sqrt,
        "Exp" => exp,
        "Log" => log,
        "Erf" => erf,
        "Tanh" => tanh,
        "Sigmoid" => sigmoid,
        "Relu" => relu,
        "Reciprocal" => reciprocal,
        "Abs" => abs,
        "Cast" => cast,
        "Clip" => clip,
        _ => return None,
    })
}

type Grads = Result<Vec<Option<String>>, GradError>;

/// Input `i`'s gradient from the full-size `g`, only when input `i` wants one.
fn to_input(
    e: &mut Emitter,
    n: &Node<'_>,
    i: usize,
    g: impl FnOnce(&mut Emitter) -> String,
) -> Option<String> {
    if !n.wants(i) {
        return None;
    }
    let full = g(e);
    Some(e.reduce_to(&full, n.x(i)))
}

fn add(e: &mut Emitter, n: &Node<'_>) -> Grads {
    let g = n.g()?.to_string();
    Ok(vec![
        to_input(e, n, 0, |_| g.clone()),
        to_input(e, n, 1, |_| g.clone()),
    ])
}

fn sub(e: &mut Emitter, n: &Node<'_>) -> Grads {
    let g = n.g()?.to_string();
    Ok(vec![
        to_input(e, n, 0, |_| g.clone()),
        to_input(e, n, 1, |e| e.neg(&g)),
    ])
}

fn mul(e: &mut Emitter, n: &Node<'_>) -> Grads {
    let g = n.g()?;
    Ok(vec![
        to_input(e, n, 0, |e| e.mul(g, n.x(1))),
        to_input(e, n, 1, |e| e.mul(g, n.x(0))),
    ])
}

/// y = a / b: da = g / b, db = -g·y / b.
fn div(e: &mut Emitter, n: &Node<'_>) -> Grads {
    let g = n.g()?;
    Ok(vec![
        to_input(e, n, 0, |e| e.div(g, n.x(1))),
        to_input(e, n, 1, |e| {
            let gy = e.mul(g, n.y());
            let q = e.div(&gy, n.x(1));
            e.neg(&q)
        }),
    ])
}

/// y = a^b: da = g·b·a^(b−1), db = g·y·ln a.
fn pow(e: &mut Emitter, n: &Node<'_>) -> Grads {
    let g = n.g()?;
    let (a, b) = (n.x(0), n.x(1));
    let da = to_input(e, n, 0, |e| {
        let one = e.scalar(1.0);
        // The exponent may be an integer tensor (x ** 2 exported with an int exponent).
        let bf = e.op("CastLike", &[b, a], vec![]);
        let b1 = e.sub(&bf, &one);
        let p = e.op("Pow", &[a, &b1], vec![]);
        let bp = e.mul(&bf, &p);
        e.mul(g, &bp)
    });
    let db = to_input(e, n, 1, |e| {
        let ln = e.op("Log", &[a], vec![]);
        let yl = e.mul(n.y(), &ln);
        e.mul(g, &yl)
    });
    Ok(vec![da, db])
}

fn sum(e: &mut Emitter, n: &Node<'_>) -> Grads {
    let g = n.g()?.to_string();
    Ok((0..n.proto.input.len())
        .map(|i| to_input(e, n, i, |_| g.clone()))
        .collect())
}

/// y = cond ? x : z; the condition takes no gradient.
fn where_(e: &mut Emitter, n: &Node<'_>) -> Grads {
    let g = n.g()?;
    let cond = n.x(0);
    let zero = e.scalar(0.0);
    Ok(vec![
        None,
        to_input(e, n, 1, |e| e.op("Where", &[cond, g, &zero], vec![])),
        to_input(e, n, 2, |e| e.op("Where", &[cond, &zero, g], vec![])),
    ])
}

fn expand(e: &mut Emitter, n: &Node<'_>) -> Grads {
    let g = n.g()?.to_string();
    Ok(vec![to_input(e, n, 0, |_| g), None])
}

/// A one-input rule from a closure of (emitter, gradient, input, output).
fn unary(
    e: &mut Emitter,
    n: &Node<'_>,
    f: impl FnOnce(&mut Emitter, &str, &str, &str) -> String,
) -> Grads {
    if !n.wants(0) {
        return Ok(vec![None]);
    }
    let g = n.g()?;
    Ok(vec![Some(f(e, g, n.x(0), n.y()))])
}

fn neg(e: &mut Emitter, n: &Node<'_>) -> Grads {
    unary(e, n, |e, g, _, _| e.neg(g))
}

fn identity(e: &mut Emitter, n: &Node<'_>) -> Grads {
    unary(e, n, |_, g, _, _| g.to_string())
}

/// d√x = 1 / (2√x).
fn sqrt(e: &mut Emitter, n: &Node<'_>) -> Grads {
    unary(e, n, |e, g, _, y| {
        let two = e.scalar(2.0);
        let twice = e.mul(y, &two);
        e.div(g, &twice)
    })
}

fn exp(e: &mut Emitter, n: &Node<'_>) -> Grads {
    unary(e, n, |e, g, _, y| e.mul(g, y))
}

fn log(e: &mut Emitter, n: &Node<'_>) -> Grads {
    unary(e, n, |e, g, x, _| e.div(g, x))
}

/// d erf(x) = 2/√π · exp(−x²).
fn erf(e: &mut Emitter, n: &Node<'_>) -> Grads {
    unary(e, n, |e, g, x, _| {
        let sq = e.mul(x, x);
        let minus = e.neg(&sq);
        let ex = e.op("Exp", &[&minus], vec![]);
        let c = e.scalar(std::f64::consts::FRAC_2_SQRT_PI);
        let d = e.mul(&ex, &c);
        e.mul(g, &d)
    })
}

/// d tanh = 1 − y².
fn tanh(e: &mut Emitter, n: &Node<'_>) -> Grads {
    unary(e, n, |e, g, _, y| {
        let one = e.scalar(1.0);
        let sq = e.mul(y, y);
        let d = e.sub(&one, &sq);
        e.mul(g, &d)
    })
}

/// dσ = y(1 − y).
fn sigmoid(e: &mut Emitter, n: &Node<'_>) -> Grads {
    unary(e, n, |e, g, _, y| {
        let one = e.scalar(1.0);
        let rest = e.sub(&one, y);
        let d = e.mul(y, &rest);
        e.mul(g, &d)
    })
}

fn relu(e: &mut Emitter, n: &Node<'_>) -> Grads {
    unary(e, n, |e, g, x, _| {
        let zero = e.scalar(0.0);
        let positive = e.op("Greater", &[x, &zero], vec![]);
        e.op("Where", &[&positive, g, &zero], vec![])
    })
}

/// d(1/x) = −y².
fn reciprocal(e: &mut Emitter, n: &Node<'_>) -> Grads {
    unary(e, n, |e, g, _, y| {
        let sq = e.mul(y, y);
        let d = e.mul(g, &sq);
        e.neg(&d)
    })
}

fn abs(e: &mut Emitter, n: &Node<'_>) -> Grads {
    unary(e, n, |e, g, x, _| {
        let sign = e.op("Sign", &[x], vec![]);
        e.mul(g, &sign)
    })
}

/// A float-to-float cast passes the gradient back in the input's type.
fn cast(e: &mut Emitter, n: &Node<'_>) -> Grads {
    unary(e, n, |e, g, x, _| e.op("CastLike", &[g, x], vec![]))
}

/// The gradient passes where min ≤ x ≤ max.
fn clip(e: &mut Emitter, n: &Node<'_>) -> Grads {
    if n.wants(1) || n.wants(2) {
        return Err(n.unsupported("gradients for the bounds min and max are not supported"));
    }
    let (low, high) = (n.input(1), n.input(2));
    let mut grads = unary(e, n, |e, g, x, _| {
        let mut inside: Option<String> = None;
        for (bound, op) in [(low, "GreaterOrEqual"), (high, "LessOrEqual")] {
            if let Some(bound) = bound {
                let ok = e.op(op, &[x, bound], vec![]);
                inside = Some(match inside {
                    None => ok,
                    Some(prev) => e.op("And", &[&prev, &ok], vec![]),
                });
            }
        }
        match inside {
            None => g.to_string(),
            Some(cond) => {
                let zero = e.scalar(0.0);
                e.op("Where", &[&cond, g, &zero], vec![])
            }
        }
    })?;
    grads.resize(n.proto.input.len(), None);
    Ok(grads)
}
