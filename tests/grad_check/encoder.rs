//! A 2-layer BERT-style encoder built node for node the way the exported L3 model is
//! (reshape targets computed from Shape/Gather/Unsqueeze/Concat, bias-first Adds, the
//! additive attention mask, Erf GELU, masked mean pooling with Clip), plus a Gemm head and
//! mean softmax cross-entropy. Hidden 8, 2 heads, FFN 16, batch 2, sequence 4, vocab 7.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use sluice::train::builder::{int, ints};
use sluice::train::grad::emit::{float, tensor};
use sluice::train::onnx::TensorProto;

use super::harness::Case;

const B: i64 = 2;
const S: i64 = 4;
const H: i64 = 8;
const HEADS: i64 = 2;
const FFN: i64 = 16;
const VOCAB: i64 = 7;
const CLASSES: i64 = 3;
const LAYERS: usize = 2;

type Params = Vec<(String, Vec<i64>, Vec<f64>)>;

struct Init {
    rng: ChaCha8Rng,
    params: Params,
}

impl Init {
    /// A parameter input: `centre` ± `spread`, uniformly.
    fn param(
        &mut self,
        c: &mut Case,
        name: &str,
        dims: &[i64],
        centre: f64,
        spread: f64,
    ) -> String {
        let n: i64 = dims.iter().product();
        let values = (0..n)
            .map(|_| centre + self.rng.random_range(-spread..spread))
            .collect();
        self.params.push((name.to_string(), dims.to_vec(), values));
        c.e.ranks.insert(name.to_string(), dims.len());
        name.to_string()
    }
}

/// `Unsqueeze(Gather(Shape(x), i), [0])`: one dimension of `x` as a 1-D tensor.
fn dim(c: &mut Case, x: &str, i: i64) -> String {
    let shape = c.e.op("Shape", &[x], vec![]);
    let idx = TensorProto::int64("", &[], &[i]);
    let idx = c.e.op("Constant", &[], vec![tensor("value", idx)]);
    let d = c.e.op("Gather", &[&shape, &idx], vec![int("axis", 0)]);
    let zero = c.e.ints(&[0]);
    c.e.op("Unsqueeze", &[&d, &zero], vec![])
}

fn dense(c: &mut Case, init: &mut Init, x: &str, name: &str, inputs: i64, outputs: i64) -> String {
    let w = init.param(c, &format!("{name}.weight"), &[inputs, outputs], 0.0, 0.4);
    let b = init.param(c, &format!("{name}.bias"), &[outputs], 0.0, 0.1);
    let product = c.e.op("MatMul", &[x, &w], vec![]);
    c.e.add(&b, &product)
}

fn layer_norm(c: &mut Case, init: &mut Init, x: &str, name: &str) -> String {
    let w = init.param(c, &format!("{name}.weight"), &[H], 1.0, 0.2);
    let b = init.param(c, &format!("{name}.bias"), &[H], 0.0, 0.1);
    c.e.op(
        "LayerNormalization",
        &[x, &w, &b],
        vec![int("axis", -1), float("epsilon", 1e-12)],
    )
}

/// `[B, S, H]` → `[B, S, heads, H/heads]`, shape computed like the export does.
fn split_heads(c: &mut Case, x: &str) -> String {
    let b = dim(c, x, 0);
    let s = dim(c, x, 1);
    let heads = c.e.ints(&[HEADS]);
    let size = c.e.ints(&[H / HEADS]);
    let shape =
        c.e.op("Concat", &[&b, &s, &heads, &size], vec![int("axis", 0)]);
    c.e.op("Reshape", &[x, &shape], vec![])
}

fn layer(c: &mut Case, init: &mut Init, h: &str, mask: &str, l: usize) -> String {
    let p = format!("layer.{l}");
    let q = dense(c, init, h, &format!("{p}.query"), H, H);
    let k = dense(c, init, h, &format!("{p}.key"), H, H);
    let v = dense(c, init, h, &format!("{p}.value"), H, H);
    let k = split_heads(c, &k);
    let v = split_heads(c, &v);
    let v =
        c.e.op("Transpose", &[&v], vec![ints("perm", &[0, 2, 1, 3])]);
    let q = split_heads(c, &q);
    let q =
        c.e.op("Transpose", &[&q], vec![ints("perm", &[0, 2, 1, 3])]);
    let k =
        c.e.op("Transpose", &[&k], vec![ints("perm", &[0, 2, 3, 1])]);
    let scores = c.e.op("MatMul", &[&q, &k], vec![]);
    let scale = c.e.scalar(((H / HEADS) as f64).sqrt());
    let scores = c.e.div(&scores, &scale);
    let scores = c.e.add(&scores, mask);
    let probs = c.e.op("Softmax", &[&scores], vec![int("axis", -1)]);
    let context = c.e.op("MatMul", &[&probs, &v], vec![]);
    let context =
        c.e.op("Transpose", &[&context], vec![ints("perm", &[0, 2, 1, 3])]);
    let b = dim(c, &context, 0);
    let s = dim(c, &context, 1);
    let width = c.e.ints(&[H]);
    let shape = c.e.op("Concat", &[&b, &s, &width], vec![int("axis", 0)]);
    let context = c.e.op("Reshape", &[&context, &shape], vec![]);
    let out = dense(c, init, &context, &format!("{p}.attention.output"), H, H);
    let res = c.e.add(&out, h);
    let h1 = layer_norm(c, init, &res, &format!("{p}.attention.LayerNorm"));
    let f = dense(c, init, &h1, &format!("{p}.intermediate"), H, FFN);
    let root2 = c.e.scalar(std::f64::consts::SQRT_2);
    let d = c.e.div(&f, &root2);
    let erf = c.e.op("Erf", &[&d], vec![]);
    let one = c.e.scalar(1.0);
    let a = c.e.add(&erf, &one);
    let m = c.e.mul(&f, &a);
    let half = c.e.scalar(0.5);
    let gelu = c.e.mul(&m, &half);
    let f2 = dense(c, init, &gelu, &format!("{p}.output"), FFN, H);
    let res = c.e.add(&f2, &h1);
    layer_norm(c, init, &res, &format!("{p}.output.LayerNorm"))
}

/// Builds the graph into `c` (setting its loss) and returns the parameters.
pub fn build(c: &mut Case) -> Params {
    let mut init = Init {
        rng: ChaCha8Rng::seed_from_u64(17),
        params: Vec::new(),
    };
    let ids = c.int64("input_ids", &[B, S], &[1, 5, 3, 0, 6, 2, 0, 0]);
    let mask = c.int64("attention_mask", &[B, S], &[1, 1, 1, 0, 1, 1, 0, 0]);
    let targets = c.e.constant(&[B, CLASSES], &[0.0, 0.0, 1.0, 1.0, 0.0, 0.0]);

    // Embeddings: word + token type (all zeros, from the ids' shape) + position (sliced).
    let word = init.param(c, "embeddings.word", &[VOCAB, H], 0.0, 0.5);
    let position = init.param(c, "embeddings.position", &[6, H], 0.0, 0.5);
    let token_type = init.param(c, "embeddings.token_type", &[2, H], 0.0, 0.5);
    let ids_shape = c.e.op("Shape", &[&ids], vec![]);
    let zero = TensorProto::int64("", &[1], &[0]);
    let types = c.e.op(
        "ConstantOfShape",
        &[&ids_shape],
        vec![tensor("value", zero)],
    );
    let positions = c.int64("position_ids", &[1, 6], &[0, 1, 2, 3, 4, 5]);
    let seq = dim(c, &ids, 1);
    let starts = c.e.ints(&[0]);
    let axes = c.e.ints(&[1]);
    let positions = c.e.op("Slice", &[&positions, &starts, &seq, &axes], vec![]);
    let w = c.e.op("Gather", &[&word, &ids], vec![]);
    let t = c.e.op("Gather", &[&token_type, &types], vec![]);
    let sum = c.e.add(&w, &t);
    let p = c.e.op("Gather", &[&position, &positions], vec![]);
    let sum = c.e.add(&sum, &p);
    let mut h = layer_norm(c, &mut init, &sum, "embeddings.LayerNorm");

    // Additive mask: (1 − mask) · float32 min, shaped [B, 1, 1, S].
    let one_axis = c.e.ints(&[1]);
    let two_axis = c.e.ints(&[2]);
    let m = c.e.op("Unsqueeze", &[&mask, &one_axis], vec![]);
    let m = c.e.op("Unsqueeze", &[&m, &two_axis], vec![]);
    let m = c.e.to_float(&m);
    let one = c.e.scalar(1.0);
    let inverted = c.e.sub(&one, &m);
    let lowest = c.e.scalar(f32::MIN as f64);
    let additive = c.e.mul(&inverted, &lowest);

    for l in 0..LAYERS {
        h = layer(c, &mut init, &h, &additive, l);
    }

    // Mean pooling over real tokens.
    let last = c.e.ints(&[-1]);
    let m = c.e.op("Unsqueeze", &[&mask, &last], vec![]);
    let h_shape = c.e.op("Shape", &[&h], vec![]);
    let m = c.e.op("Expand", &[&m, &h_shape], vec![]);
    let m = c.e.to_float(&m);
    let masked = c.e.mul(&h, &m);
    let seq_axis = c.e.ints(&[1]);
    let total =
        c.e.op("ReduceSum", &[&masked, &seq_axis], vec![int("keepdims", 0)]);
    let count =
        c.e.op("ReduceSum", &[&m, &seq_axis], vec![int("keepdims", 0)]);
    let floor = c.e.scalar(1e-9);
    let count = c.e.op("Clip", &[&count, &floor], vec![]);
    let pooled = c.e.div(&total, &count);

    // Head and mean softmax cross-entropy.
    let hw = init.param(c, "head.weight", &[CLASSES, H], 0.0, 0.5);
    let hb = init.param(c, "head.bias", &[CLASSES], 0.0, 0.1);
    let logits = c.e.op("Gemm", &[&pooled, &hw, &hb], vec![int("transB", 1)]);
    let log_probs = c.e.op("LogSoftmax", &[&logits], vec![int("axis", 1)]);
    let picked = c.e.mul(&targets, &log_probs);
    let class_axis = c.e.ints(&[1]);
    let per_row = c.e.op(
        "ReduceSum",
        &[&picked, &class_axis],
        vec![int("keepdims", 0)],
    );
    let mean = c.e.op("ReduceMean", &[&per_row], vec![int("keepdims", 0)]);
    c.loss = c.e.neg(&mean);
    init.params
}
