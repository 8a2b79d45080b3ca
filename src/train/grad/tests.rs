//! Planning: which nodes need rules, what is refused and how the refusal reads. (Numeric
//! checks against finite differences run on ONNX Runtime, in tests/grad_check.rs.)

use super::super::onnx::{Dim, GraphProto, NodeProto, ValueInfoProto, data_type};
use super::*;

fn node(op: &str, name: &str, inputs: &[&str], output: &str) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.to_string()],
        name: name.to_string(),
        op_type: op.to_string(),
        ..Default::default()
    }
}

fn graph(nodes: Vec<NodeProto>) -> GraphProto {
    GraphProto {
        name: "g".into(),
        node: nodes,
        input: ["x", "w"]
            .iter()
            .map(|n| ValueInfoProto::tensor(n, data_type::FLOAT, &[Dim::Fixed(2), Dim::Fixed(2)]))
            .collect(),
        ..Default::default()
    }
}

fn wrt(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[test]
fn an_operator_without_a_rule_on_the_path_is_refused_by_name() {
    let g = graph(vec![
        node("MatMul", "mm", &["x", "w"], "h"),
        node("Cosh", "/layer.0/act/Cosh", &["h"], "a"),
        node("ReduceSum", "sum", &["a"], "loss"),
    ]);
    let err = differentiate(&g, "loss", &wrt(&["w"])).unwrap_err();
    assert_eq!(
        err,
        GradError::NoRule {
            op: "Cosh".into(),
            node: "/layer.0/act/Cosh".into()
        }
    );
    let message = err.to_string();
    assert!(
        message.contains("Cosh") && message.contains("/layer.0/act/Cosh"),
        "{message}"
    );
}

#[test]
fn operators_off_the_path_need_no_rule() {
    // Cosh reads only `x`, which is not trained; Shape arithmetic carries no gradient; and
    // the Cosh of `w` never reaches the loss.
    let g = graph(vec![
        node("Cosh", "frozen", &["x"], "fx"),
        node("Shape", "shape", &["w"], "s"),
        node("Cosh", "unused", &["w"], "dead"),
        node("MatMul", "mm", &["fx", "w"], "h"),
        node("Reshape", "flat", &["h", "s"], "r"),
        node("ReduceSum", "sum", &["r"], "loss"),
    ]);
    let grads = differentiate(&g, "loss", &wrt(&["w"])).unwrap();
    assert_eq!(grads.grads.len(), 1);
    assert!(grads.graph.node.len() > g.node.len());
    assert!(
        grads.graph.node[g.node.len()..]
            .iter()
            .all(|n| n.op_type != "Cosh")
    );
}

#[test]
fn unknown_loss_and_parameters_are_refused() {
    let g = graph(vec![node("MatMul", "mm", &["x", "w"], "loss")]);
    let err = differentiate(&g, "nope", &wrt(&["w"])).unwrap_err();
    assert!(err.to_string().contains("loss `nope`"), "{err}");
    let err = differentiate(&g, "loss", &wrt(&["v"])).unwrap_err();
    assert!(err.to_string().contains("parameter `v`"), "{err}");
}

#[test]
fn a_parameter_the_loss_ignores_gets_zeros() {
    let g = graph(vec![node("ReduceSum", "sum", &["x"], "loss")]);
    let grads = differentiate(&g, "loss", &wrt(&["w"])).unwrap();
    let last = grads.graph.node.last().unwrap();
    assert_eq!(last.op_type, "ConstantOfShape");
    assert_eq!(grads.grads[0].1, last.output[0]);
}

#[test]
fn every_listed_operator_has_a_rule() {
    for op in supported() {
        assert!(rule(op).is_some(), "{op}");
    }
    assert!(rule("Cosh").is_none());
}
