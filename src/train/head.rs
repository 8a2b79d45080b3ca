//! Classifier heads trained on frozen encoder features: a linear layer, or an MLP of ReLU
//! hidden layers with dropout; their parameters, named and shaped, and a seeded start.

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// A float tensor in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl Tensor {
    pub fn zeros(shape: &[usize]) -> Self {
        Self {
            shape: shape.to_vec(),
            data: vec![0.0; shape.iter().product()],
        }
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

/// Tensors by name, in name order (parameters, optimiser state).
pub type Tensors = BTreeMap<String, Tensor>;

/// The shape of a head: features in, classes out, hidden layers between.
#[derive(Debug, Clone, PartialEq)]
pub struct HeadLayout {
    pub input_dim: usize,
    pub classes: usize,
    /// Widths of the ReLU hidden layers; empty for a linear head.
    pub hidden: Vec<usize>,
    /// Probability of dropping a hidden unit while training (0 for none).
    pub dropout: f32,
}

/// One dense layer of the head: `y = x · weight + bias`.
#[derive(Debug, Clone, PartialEq)]
pub struct Layer {
    pub weight: String,
    pub bias: String,
    pub inputs: usize,
    pub outputs: usize,
}

impl HeadLayout {
    pub fn linear(input_dim: usize, classes: usize) -> Self {
        Self {
            input_dim,
            classes,
            hidden: Vec::new(),
            dropout: 0.0,
        }
    }

    /// The dense layers from input to logits; hidden layers are `hidden.<i>`, the last is
    /// `head`.
    pub fn layers(&self) -> Vec<Layer> {
        let mut widths = vec![self.input_dim];
        widths.extend(&self.hidden);
        widths.push(self.classes);
        widths
            .windows(2)
            .enumerate()
            .map(|(i, w)| {
                let stem = if i == self.hidden.len() {
                    "head".to_string()
                } else {
                    format!("hidden.{i}")
                };
                Layer {
                    weight: format!("{stem}.weight"),
                    bias: format!("{stem}.bias"),
                    inputs: w[0],
                    outputs: w[1],
                }
            })
            .collect()
    }

    /// Every parameter's name and shape.
    pub fn parameters(&self) -> Vec<(String, Vec<usize>)> {
        self.layers()
            .into_iter()
            .flat_map(|l| {
                [
                    (l.weight, vec![l.inputs, l.outputs]),
                    (l.bias, vec![l.outputs]),
                ]
            })
            .collect()
    }

    /// Starting parameters: weights uniform in ±sqrt(6 / (in + out)) (Glorot), biases zero;
    /// the same seed gives the same start.
    pub fn initial_parameters(&self, seed: u64) -> Tensors {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut params = Tensors::new();
        for layer in self.layers() {
            let limit = (6.0 / (layer.inputs + layer.outputs) as f64).sqrt() as f32;
            let weight = (0..layer.inputs * layer.outputs)
                .map(|_| rng.random_range(-limit..limit))
                .collect();
            params.insert(
                layer.weight,
                Tensor {
                    shape: vec![layer.inputs, layer.outputs],
                    data: weight,
                },
            );
            params.insert(layer.bias, Tensor::zeros(&[layer.outputs]));
        }
        params
    }

    /// Whether a parameter takes weight decay (weights do, biases do not).
    pub fn decays(name: &str) -> bool {
        name.ends_with(".weight")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_mlp_has_named_layers_from_input_to_logits() {
        let layout = HeadLayout {
            input_dim: 384,
            classes: 2,
            hidden: vec![64, 16],
            dropout: 0.1,
        };
        let names: Vec<(String, Vec<usize>)> = layout.parameters();
        assert_eq!(
            names,
            vec![
                ("hidden.0.weight".to_string(), vec![384, 64]),
                ("hidden.0.bias".to_string(), vec![64]),
                ("hidden.1.weight".to_string(), vec![64, 16]),
                ("hidden.1.bias".to_string(), vec![16]),
                ("head.weight".to_string(), vec![16, 2]),
                ("head.bias".to_string(), vec![2]),
            ]
        );
        let a = layout.initial_parameters(7);
        assert_eq!(a, layout.initial_parameters(7));
        assert_ne!(a, layout.initial_parameters(8));
        let limit = (6.0f32 / 66.0).sqrt();
        assert!(a["hidden.1.weight"].data.iter().all(|w| w.abs() <= limit));
        assert!(a["head.bias"].data.iter().all(|b| *b == 0.0));
    }
}
