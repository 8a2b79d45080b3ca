"""Checks sluice's int8 rewrite against onnxruntime.quantization.quantize_dynamic.

usage: compress_reference.py SOURCE.onnx OURS.onnx OUT.json [--per-channel]

Quantizes SOURCE with ORT (MatMul only, as sluice does), then compares the int8 weights by
name and runs SOURCE, OURS and ORT's model on the same token batches; writes the figures
as JSON.
"""
import json
import sys

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic


def main():
    source, ours, out = sys.argv[1:4]
    per_channel = "--per-channel" in sys.argv
    theirs = out + ".ort.onnx"
    quantize_dynamic(
        source,
        theirs,
        weight_type=QuantType.QInt8,
        per_channel=per_channel,
        op_types_to_quantize=["MatMul"],
    )
    ref = {t.name: numpy_helper.to_array(t) for t in onnx.load(theirs).graph.initializer}
    mine = {t.name: numpy_helper.to_array(t) for t in onnx.load(ours).graph.initializer}
    weights = [n for n in ref if n.endswith("_quantized") and ref[n].dtype == np.int8]
    compared, equal, total, max_step, scale_err, missing = 0, 0, 0, 0, 0.0, []
    for name in weights:
        if name not in mine:
            missing.append(name)
            continue
        a, b = ref[name].astype(np.int32), mine[name].astype(np.int32)
        if a.shape != b.shape:
            missing.append(name + " (shape)")
            continue
        compared += 1
        equal += int((a == b).sum())
        total += a.size
        max_step = max(max_step, int(np.abs(a - b).max()))
        s = name[: -len("_quantized")] + "_scale"
        scale_err = max(scale_err, float(np.abs(ref[s] - mine[s]).max() / np.abs(ref[s]).max()))

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    sessions = {
        k: ort.InferenceSession(p, options, providers=["CPUExecutionProvider"])
        for k, p in [("source", source), ("ours", ours), ("ort", theirs)]
    }
    names = [i.name for i in sessions["source"].get_inputs()]
    rng = np.random.default_rng(7)
    worst_ours_ort, cos_ours, cos_ort = 0.0, [], []
    for seq in (8, 24, 64):
        ids = rng.integers(1000, 20000, size=(4, seq), dtype=np.int64)
        ids[:, 0], ids[:, -1] = 101, 102
        feed = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
        feed = {k: v for k, v in feed.items() if k in names}
        outs = {k: s.run(None, feed)[0] for k, s in sessions.items()}
        worst_ours_ort = max(worst_ours_ort, float(np.abs(outs["ours"] - outs["ort"]).max()))
        for k, acc in (("ours", cos_ours), ("ort", cos_ort)):
            a = outs[k].reshape(-1, outs[k].shape[-1])
            b = outs["source"].reshape(-1, a.shape[-1])
            acc.extend((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1))
    figures = {
        "weights_in_reference": len(weights),
        "weights_compared": compared,
        "missing": missing,
        "equal_fraction": equal / max(total, 1),
        "max_step": max_step,
        "max_scale_rel_err": scale_err,
        "max_abs_diff_ours_vs_ort": worst_ours_ort,
        "mean_cosine_ours_vs_fp32": float(np.mean(cos_ours)),
        "mean_cosine_ort_vs_fp32": float(np.mean(cos_ort)),
        "ops_ours": sorted({n.op_type for n in onnx.load(ours).graph.node}),
    }
    json.dump(figures, open(out, "w"), indent=1)


if __name__ == "__main__":
    main()
