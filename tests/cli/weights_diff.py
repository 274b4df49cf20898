#!/usr/bin/env python3
"""Largest relative difference between the weights of two osprey models or
checkpoints (safetensors): for each tensor, max |a - b| / max |a|, and the
worst over all tensors. Optimizer state (optim.*) is left out unless
--optim is given.

    weights_diff.py A B [--optim] [--max TOL]   (exit 1 above TOL)
"""
import json
import struct
import sys

import numpy as np


def load(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        body = f.read()
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        assert t["dtype"] == "F32", (name, t["dtype"])
        a, b = t["data_offsets"]
        out[name] = np.frombuffer(body[a:b], dtype="<f4").reshape(t["shape"])
    return out


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    tol = None
    if "--max" in sys.argv:
        tol = float(sys.argv[sys.argv.index("--max") + 1])
        args.remove(sys.argv[sys.argv.index("--max") + 1])
    a, b = load(args[0]), load(args[1])
    keys = sorted(k for k in a if "--optim" in sys.argv or not k.startswith("optim."))
    worst, where = 0.0, None
    for k in keys:
        if k not in b or a[k].shape != b[k].shape:
            print(f"{k}: missing or shaped differently")
            return 1
        scale = float(np.abs(a[k]).max())
        d = float(np.abs(a[k].astype(np.float64) - b[k]).max()) / (scale if scale > 0 else 1.0)
        if d > worst:
            worst, where = d, k
    print(f"max relative difference {worst:.3g} ({where}) over {len(keys)} tensors")
    return 1 if tol is not None and worst > tol else 0


if __name__ == "__main__":
    sys.exit(main())
