#!/usr/bin/env python3
"""Build a user-supplied training step graph with the `onnx` package: softmax regression
trained by SGD with momentum, written independently of sluice's own graph builder.

    custom_step_graph.py OUT.onnx --features 384 --classes 2 [--momentum 0.9] [--head-names]

With --head-names the parameters are called `head.weight` and `head.bias`, the names of
sluice's linear head, so a training job (`training.step_graph`, `head = {type = "linear"}`)
can export what this graph trains as the package's head.

It follows sluice's step-graph contract (README, "Training: the step-graph contract"):
`param.*` and `opt.*` inputs with fixed shapes come back as `new.param.*` / `new.opt.*`
outputs; `batch.features`, `batch.targets` (one-hot), `step` and `lr` go in; `loss` (the
batch's mean loss before the update) comes out. Different operators from sluice's graph on
purpose (Gemm, Softmax + Log, Gather of Shape) so the contract, not the builder, is tested.
"""

import argparse

import onnx
from onnx import TensorProto, helper


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("--features", type=int, required=True)
    parser.add_argument("--classes", type=int, required=True)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--head-names", action="store_true")
    args = parser.parse_args()
    d, c = args.features, args.classes
    w, b = ("head.weight", "head.bias") if args.head_names else ("w", "b")

    def tensor(name, dims):
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, dims)

    inputs = [
        tensor(f"param.{w}", [d, c]),
        tensor(f"param.{b}", [c]),
        tensor(f"opt.velocity.{w}", [d, c]),
        tensor(f"opt.velocity.{b}", [c]),
        tensor("batch.features", ["n", d]),
        tensor("batch.targets", ["n", c]),
        tensor("step", []),
        tensor("lr", []),
    ]
    outputs = [
        tensor("loss", []),
        tensor(f"new.param.{w}", [d, c]),
        tensor(f"new.param.{b}", [c]),
        tensor(f"new.opt.velocity.{w}", [d, c]),
        tensor(f"new.opt.velocity.{b}", [c]),
    ]
    constants = [
        helper.make_tensor("axis1", TensorProto.INT64, [1], [1]),
        helper.make_tensor("axis0", TensorProto.INT64, [1], [0]),
        helper.make_tensor("zero_index", TensorProto.INT64, [], [0]),
        helper.make_tensor("momentum", TensorProto.FLOAT, [], [args.momentum]),
    ]
    n = helper.make_node
    nodes = [
        n("Gemm", ["batch.features", f"param.{w}", f"param.{b}"], ["logits"]),
        n("Softmax", ["logits"], ["probs"], axis=1),
        n("Log", ["probs"], ["log_probs"]),
        n("Mul", ["batch.targets", "log_probs"], ["picked"]),
        n("ReduceSum", ["picked", "axis1"], ["row_ll"], keepdims=0),
        n("ReduceMean", ["row_ll"], ["mean_ll"], keepdims=0),
        n("Neg", ["mean_ll"], ["loss"]),
        n("Shape", ["batch.features"], ["shape"]),
        n("Gather", ["shape", "zero_index"], ["rows_int"], axis=0),
        n("Cast", ["rows_int"], ["rows"], to=TensorProto.FLOAT),
        n("Sub", ["probs", "batch.targets"], ["residual"]),
        n("Div", ["residual", "rows"], ["grad_logits"]),
        n("Gemm", ["batch.features", "grad_logits"], ["grad_w"], transA=1),
        n("ReduceSum", ["grad_logits", "axis0"], ["grad_b"], keepdims=0),
    ]
    for short, name in [("w", w), ("b", b)]:
        nodes += [
            n("Mul", ["momentum", f"opt.velocity.{name}"], [f"kept_{short}"]),
            n("Add", [f"kept_{short}", f"grad_{short}"], [f"new.opt.velocity.{name}"]),
            n("Mul", ["lr", f"new.opt.velocity.{name}"], [f"move_{short}"]),
            n("Sub", [f"param.{name}", f"move_{short}"], [f"new.param.{name}"]),
        ]
    graph = helper.make_graph(nodes, "custom_sgd_momentum_step", inputs, outputs, constants)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, args.out)


if __name__ == "__main__":
    main()
