//! Gradient rules of operators that move elements without arithmetic: Reshape and its kin
//! (the gradient is reshaped back), Transpose (inverse permutation), Concat (split back),
//! and Slice and Gather (the gradient is scattered into zeros, adding where Gather read an
//! element more than once).

use super::emit::{Emitter, attr_int, attr_ints, int, ints, string};
use super::{GradError, Node, Rule};

pub(super) const OPS: &[&str] = &[
    "Reshape",
    "Flatten",
    "Squeeze",
    "Unsqueeze",
    "Transpose",
    "Concat",
    "Slice",
    "Gather",
];

pub(super) fn rule(op: &str) -> Option<Rule> {
    Some(match op {
        "Reshape" | "Flatten" | "Squeeze" | "Unsqueeze" => reshape_back,
        "Transpose" => transpose,
        "Concat" => concat,
        "Slice" => slice,
        "Gather" => gather,
        _ => return None,
    })
}

type Grads = Result<Vec<Option<String>>, GradError>;

/// The first input's gradient only; the others (shapes, axes, indices) take none.
fn first(n: &Node<'_>, g: Option<String>) -> Vec<Option<String>> {
    let mut grads = vec![None; n.proto.input.len().max(1)];
    grads[0] = g;
    grads
}

/// Same elements, new shape: the gradient takes the input's shape back.
fn reshape_back(e: &mut Emitter, n: &Node<'_>) -> Grads {
    if !n.wants(0) {
        return Ok(first(n, None));
    }
    let g = n.g()?;
    let shape = e.shape(n.x(0), None, None);
    Ok(first(n, Some(e.op("Reshape", &[g, &shape], vec![]))))
}

fn transpose(e: &mut Emitter, n: &Node<'_>) -> Grads {
    if !n.wants(0) {
        return Ok(first(n, None));
    }
    let g = n.g()?;
    let dx = match attr_ints(n.proto, "perm") {
        Some(perm) => {
            let mut inverse = vec![0i64; perm.len()];
            for (i, &p) in perm.iter().enumerate() {
                inverse[p as usize] = i as i64;
            }
            e.op("Transpose", &[g], vec![ints("perm", &inverse)])
        }
        // No perm reverses the axes, which is its own inverse.
        None => e.op("Transpose", &[g], vec![]),
    };
    Ok(first(n, Some(dx)))
}

/// Split the gradient along the axis at the inputs' sizes.
fn concat(e: &mut Emitter, n: &Node<'_>) -> Grads {
    let g = n.g()?;
    let axis = attr_int(n.proto, "axis", 0);
    let end = if axis == -1 { None } else { Some(axis + 1) };
    let sizes: Vec<String> = (0..n.proto.input.len())
        .map(|i| e.shape(n.x(i), Some(axis), end))
        .collect();
    let refs: Vec<&str> = sizes.iter().map(String::as_str).collect();
    let split = e.op("Concat", &refs, vec![int("axis", 0)]);
    let parts = e.op_n(
        "Split",
        &[g, &split],
        vec![int("axis", axis)],
        n.proto.input.len(),
    );
    Ok(parts
        .into_iter()
        .enumerate()
        .map(|(i, p)| n.wants(i).then_some(p))
        .collect())
}

/// The flat position of every element of `x`, shaped like `x` (int64).
fn positions(e: &mut Emitter, x: &str) -> (String, String) {
    let count = e.op("Size", &[x], vec![]);
    let zero = e.op(
        "Constant",
        &[],
        vec![super::emit::tensor("value", int64_scalar(0))],
    );
    let one = e.op(
        "Constant",
        &[],
        vec![super::emit::tensor("value", int64_scalar(1))],
    );
    let flat = e.op("Range", &[&zero, &count, &one], vec![]);
    let shape = e.shape(x, None, None);
    (e.op("Reshape", &[&flat, &shape], vec![]), count)
}

fn int64_scalar(v: i64) -> super::super::onnx::TensorProto {
    super::super::onnx::TensorProto::int64("", &[], &[v])
}

/// `g` added into zeros shaped like `x` at the flat positions `at` (same shape as `g`).
fn scatter_flat(e: &mut Emitter, g: &str, at: &str, count: &str, x: &str) -> String {
    let minus_one = e.ints(&[-1]);
    let at = e.op("Reshape", &[at, &minus_one], vec![]);
    let g = e.op("Reshape", &[g, &minus_one], vec![]);
    let one = e.ints(&[1]);
    let len = e.op("Reshape", &[count, &one], vec![]);
    let zero = super::emit::float_tensor(e.dtype, "", &[1], &[0.0]);
    let zeros = e.op(
        "ConstantOfShape",
        &[&len],
        vec![super::emit::tensor("value", zero)],
    );
    let flat = e.op(
        "ScatterElements",
        &[&zeros, &at, &g],
        vec![int("axis", 0), string("reduction", "add")],
    );
    let shape = e.shape(x, None, None);
    e.op("Reshape", &[&flat, &shape], vec![])
}

/// Slice the map of flat positions the same way, then scatter the gradient to them; so
/// every form of starts/ends/axes/steps (negative, clamped, strided) follows the forward.
fn slice(e: &mut Emitter, n: &Node<'_>) -> Grads {
    if !n.wants(0) {
        return Ok(first(n, None));
    }
    let g = n.g()?;
    let x = n.x(0);
    let (map, count) = positions(e, x);
    let inputs: Vec<&str> = std::iter::once(map.as_str())
        .chain(n.proto.input.iter().skip(1).map(String::as_str))
        .collect();
    let picked = e.op("Slice", &inputs, vec![]);
    Ok(first(n, Some(scatter_flat(e, g, &picked, &count, x))))
}

/// Along axis 0 (embedding lookups) a ScatterND adds rows back; along other axes the map
/// of flat positions is gathered like the data and the gradient scattered to it.
fn gather(e: &mut Emitter, n: &Node<'_>) -> Grads {
    if !n.wants(0) {
        return Ok(first(n, None));
    }
    let g = n.g()?;
    let (data, indices) = (n.x(0), n.x(1));
    let axis = attr_int(n.proto, "axis", 0);
    if axis != 0 {
        let (map, count) = positions(e, data);
        let picked = e.op("Gather", &[&map, indices], vec![int("axis", axis)]);
        return Ok(first(n, Some(scatter_flat(e, g, &picked, &count, data))));
    }
    // Negative indices count from the end; ScatterND wants them in range.
    let idx = e.op("Cast", &[indices], vec![int("to", 7)]);
    // Scalars, so a scalar index keeps its rank through the wrap-around.
    let rows = e.shape(data, Some(0), Some(1));
    let scalar = e.ints(&[]);
    let rows = e.op("Reshape", &[&rows, &scalar], vec![]);
    let zero = e.op(
        "Constant",
        &[],
        vec![super::emit::tensor("value", int64_scalar(0))],
    );
    let negative = e.op("Less", &[&idx, &zero], vec![]);
    let wrapped = e.add(&idx, &rows);
    let idx = e.op("Where", &[&negative, &wrapped, &idx], vec![]);
    let last = e.ints(&[-1]);
    let idx = e.op("Unsqueeze", &[&idx, &last], vec![]);
    let zeros = e.zeros_like(data);
    let dx = e.op(
        "ScatterND",
        &[&zeros, &idx, g],
        vec![string("reduction", "add")],
    );
    Ok(first(n, Some(dx)))
}
