"""Gives every [constant] of an osprey model (its `<layer>.value` buffers,
0 until set) random values in place, so that a round-trip test sees them.
The model is a safetensors file: 8-byte header length, JSON header, data.

    /usr/bin/python3 tests/onnx/set_constants.py MODEL.osp [SEED]
"""
import json
import struct
import sys

import numpy as np


def main():
    path = sys.argv[1]
    rng = np.random.RandomState(int(sys.argv[2]) if len(sys.argv) > 2 else 0)
    with open(path, "r+b") as f:
        (hlen,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(hlen))
        count = 0
        for name, t in sorted(header.items()):
            if name == "__metadata__" or not name.endswith(".value"):
                continue
            assert t["dtype"] == "F32", (name, t["dtype"])
            begin, end = t["data_offsets"]
            # positive and away from 0, so that a constant divisor stays safe
            v = rng.uniform(0.5, 1.5, (end - begin) // 4).astype("<f4")
            f.seek(8 + hlen + begin)
            f.write(v.tobytes())
            count += 1
    if count == 0:
        sys.exit(f"set_constants.py: {path} has no [constant] values")


if __name__ == "__main__":
    main()
