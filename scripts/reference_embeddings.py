#!/usr/bin/env python3
"""Independent reference for sluice's embeddings: the usual Python pipeline (tokenizers +
onnxruntime + numpy, batches of 32 in input order, mean pooling under the attention mask,
L2 normalisation), written without any of sluice's code.

usage: reference_embeddings.py MODEL_DIR IN.jsonl OUT.jsonl [--max-length 256] [--threads 2]
                               [--timing FILE]
IN lines need "id" and "text"; OUT lines are {"id", "embedding"}. With --timing, the seconds
of the embedding loop (after loading) are written to FILE as JSON.
"""
import json
import sys
import time

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer


def main() -> None:
    args = sys.argv[1:]
    def option(name, default):
        if name in args:
            i = args.index(name)
            value = args[i + 1]
            del args[i : i + 2]
            return value
        return default

    max_length = int(option("--max-length", 256))
    threads = int(option("--threads", 2))
    timing = option("--timing", None)
    model_dir, source, target = args
    tokenizer = Tokenizer.from_file(f"{model_dir}/tokenizer.json")
    tokenizer.no_padding()
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")  # pad to the batch's longest row
    tokenizer.enable_truncation(max_length=max_length)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(f"{model_dir}/model.onnx", options, providers=["CPUExecutionProvider"])
    input_names = {i.name for i in session.get_inputs()}
    # The token states: the first output of rank 3 (some exports put other outputs first).
    hidden_name = next(o.name for o in session.get_outputs() if len(o.shape) == 3)
    rows = [json.loads(line) for line in open(source, encoding="utf-8") if line.strip()]
    started = time.perf_counter()
    with open(target, "w", encoding="utf-8") as out:
        for start in range(0, len(rows), 32):
            batch = rows[start : start + 32]
            encodings = tokenizer.encode_batch([r["text"] for r in batch])
            feeds = {
                "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
                "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
            }
            feeds = {k: v for k, v in feeds.items() if k in input_names}
            hidden = session.run([hidden_name], feeds)[0]
            mask = feeds["attention_mask"][..., None].astype(np.float32)
            pooled = (hidden * mask).sum(axis=1) / np.clip(mask.sum(axis=1), 1e-9, None)
            pooled /= np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
            for row, vector in zip(batch, pooled):
                out.write(json.dumps({"id": row["id"], "embedding": vector.tolist()}) + "\n")
    seconds = time.perf_counter() - started
    if timing:
        with open(timing, "w", encoding="utf-8") as f:
            json.dump({"texts": len(rows), "seconds": seconds}, f)
    print(f"{len(rows)} reference embeddings -> {target} ({len(rows) / seconds:.1f} texts/s)", file=sys.stderr)


if __name__ == "__main__":
    main()
