#!/usr/bin/env python3
"""Copies the shared libraries out of Python wheels into one flat folder.

    extract-libs.py DEST WHEEL... [--only FILE_NAME]...

The image stages use it instead of `unzip -j '*.so*'` (what scripts/assets.sh and
scripts/gpu_assets.sh do on a developer machine), so the stages need no unzip package. One
flat folder matters: ONNX Runtime loads its CUDA provider from beside itself, and the
provider finds cuBLAS, cuDNN, cuFFT, cuRAND and NVRTC on LD_LIBRARY_PATH.

Python extension modules (onnxruntime_pybind11_state*.so) are skipped: sluice loads the C
library, never the Python module, and the module is as large as the library. With --only,
just the named files are taken, and each must be found.
"""

import os
import sys
import zipfile


def main(argv):
    only = []
    args = []
    it = iter(argv)
    for arg in it:
        if arg == "--only":
            only.append(next(it))
        else:
            args.append(arg)
    if len(args) < 2:
        sys.exit(__doc__)
    dest, wheels = args[0], args[1:]
    os.makedirs(dest, exist_ok=True)
    taken = set()
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as zf:
            for member in zf.infolist():
                name = os.path.basename(member.filename)
                if member.is_dir() or ".so" not in name or "pybind11_state" in name:
                    continue
                if only and name not in only:
                    continue
                if name in taken:
                    sys.exit(f"{name} is in two wheels; refusing to pick one silently")
                target = os.path.join(dest, name)
                with zf.open(member) as src, open(target, "wb") as out:
                    out.write(src.read())
                os.chmod(target, 0o644)
                taken.add(name)
                print(f"{wheel}: {member.filename} -> {target}")
    missing = [name for name in only if name not in taken]
    if missing:
        sys.exit(f"not found in {wheels}: {missing}")
    if not taken:
        sys.exit(f"no shared library in {wheels}")


if __name__ == "__main__":
    main(sys.argv[1:])
