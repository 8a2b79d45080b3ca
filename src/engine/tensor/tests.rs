//! The mapping checks and row feeds against declared ports (no runtime needed).

use serde_json::value::RawValue;

use super::*;
use crate::job::InputFields;

fn tensor(name: &str, element: Element, shape: &[i64]) -> Port {
    Port {
        name: name.into(),
        ty: PortType::Tensor {
            element,
            shape: shape.to_vec(),
        },
    }
}

/// What skl2onnx writes for a classifier over 4 float features.
fn sklearn_ports() -> (Vec<Port>, Vec<Port>) {
    (
        vec![tensor("X", Element::Float32, &[-1, 4])],
        vec![
            tensor("output_label", Element::Int64, &[-1]),
            Port {
                name: "output_probability".into(),
                ty: PortType::MapSequence {
                    key: Element::Int64,
                    value: Element::Float32,
                },
            },
        ],
    )
}

fn spec(toml_text: &str) -> TensorSpec {
    toml::from_str(toml_text).unwrap()
}

#[test]
fn a_classifier_mapping_is_planned_with_its_label_and_probabilities() {
    let (inputs, outputs) = sklearn_ports();
    let plan = check_mapping(
        &inputs,
        &outputs,
        &spec(r#"inputs = { X = ["a", "b", "c", "d"] }"#),
    )
    .unwrap();
    assert_eq!(plan.inputs[0].width, Some(4));
    assert_eq!(plan.fixed_batch, None);
    assert_eq!(
        plan.classifier,
        Some(ClassifierOutputs {
            label: "output_label".into(),
            probabilities: "output_probability".into()
        })
    );
    // One list-valued field feeds the whole row too.
    let plan = check_mapping(&inputs, &outputs, &spec(r#"inputs = { X = "features" }"#)).unwrap();
    assert_eq!(plan.inputs[0].fields, ["features"]);
}

#[test]
fn errors_name_what_does_not_fit() {
    let (inputs, outputs) = sklearn_ports();
    let err = |text: &str| check_mapping(&inputs, &outputs, &spec(text)).unwrap_err();
    let e = err("inputs = {}");
    assert!(
        e.contains("model input \"X\" (float32 [?, 4]) has no field mapped to it"),
        "{e}"
    );
    let e = err(r#"inputs = { X = "f", Y = "g" }"#);
    assert!(
        e.contains("tensor.inputs names \"Y\", which the model has no input of"),
        "{e}"
    );
    let e = err(r#"inputs = { X = ["a", "b", "c", "d", "e"] }"#);
    assert!(
        e.contains("4 values per row, but tensor.inputs maps 5 fields"),
        "{e}"
    );
    let e = err(r#"inputs = { X = "f" }
outputs = ["probabilities"]"#);
    assert!(
        e.contains("tensor.outputs names \"probabilities\", which the model has no output of")
            && e.contains("output_probability (sequence of map(int64 → float32))"),
        "{e}"
    );
    let e = err(r#"inputs = { X = "f" }
tokenize = ["f"]"#);
    assert!(e.contains("dtype mismatch"), "{e}");
    let half = [tensor("X", Element::Other("float16"), &[-1, 4])];
    let e = check_mapping(&half, &outputs, &spec(r#"inputs = { X = "f" }"#)).unwrap_err();
    assert!(e.contains("float16") && e.contains("cannot feed"), "{e}");
    let text = [tensor("T", Element::String, &[-1, 1])];
    let e = check_mapping(&text, &outputs, &spec(r#"inputs = { T = ["a", "b"] }"#)).unwrap_err();
    assert!(e.contains("takes one text field"), "{e}");
}

fn raw(text: &str) -> Box<RawValue> {
    RawValue::from_string(text.to_string()).unwrap()
}

#[test]
fn rows_feed_numbers_lists_csv_cells_and_texts() {
    let (inputs, outputs) = sklearn_ports();
    let mut spec = spec(r#"inputs = { X = ["a", "rest"] }"#);
    let mut plan = check_mapping(&inputs, &outputs, &spec).unwrap();
    let fields = spec.fields();
    let feed = feed_row(&plan, &fields, &[raw("1.5"), raw("[2, 3, 4]")]).unwrap();
    assert_eq!(feed, vec![RowFeed::Numbers(vec![1.5, 2.0, 3.0, 4.0])]);
    let feed = feed_row(&plan, &fields, &[raw("\"1.5\""), raw("[2, 3, 4]")]).unwrap();
    assert_eq!(feed, vec![RowFeed::Numbers(vec![1.5, 2.0, 3.0, 4.0])]);
    let e = feed_row(&plan, &fields, &[raw("\"abc\""), raw("[2, 3, 4]")]).unwrap_err();
    assert!(
        e.contains("field \"a\" is \"abc\", but model input \"X\" takes float32 numbers"),
        "{e}"
    );
    let e = feed_row(&plan, &fields, &[raw("1"), raw("[2]")]).unwrap_err();
    assert!(e.contains("takes 4 values per row"), "{e}");
    // A text input takes its field as is.
    spec.inputs
        .insert("T".into(), InputFields::One("title".into()));
    let with_text = [inputs[0].clone(), tensor("T", Element::String, &[-1, 1])];
    plan = check_mapping(&with_text, &outputs, &spec).unwrap();
    // Fields in model-input-name order: T's "title", then X's.
    let fields = spec.fields();
    assert_eq!(fields, ["title", "a", "rest"]);
    let feed = feed_row(&plan, &fields, &[raw("\"hi\""), raw("1"), raw("[2,3,4]")]).unwrap();
    assert_eq!(feed[1], RowFeed::Text("hi".into()));
}
