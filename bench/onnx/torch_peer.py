"""The PyTorch peer of the ONNX benchmark: the torchvision module that
make_models.py exports (same seed, same weights), in eval mode under
torch.no_grad(), on a random 3x224x224 batch held in memory. Prints one
JSON object like `osprey bench --json`: the median images/s over the
repetitions, each about --seconds long after a warm-up.

    /usr/bin/python3 bench/onnx/torch_peer.py --net resnet18 --batch B --threads T
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_models import NETS, build  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--net", required=True, choices=NETS)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=2.0)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    net = build(a.net)
    x = torch.randn(a.batch, 3, 224, 224)
    with torch.no_grad():
        net(x)  # warm-up: first-run allocations
        t0 = time.perf_counter()
        net(x)
        one = time.perf_counter() - t0
        steps = max(1, round(a.seconds / max(one, 1e-6)))
        rates = []
        for _ in range(a.reps):
            t0 = time.perf_counter()
            for _ in range(steps):
                net(x)
            rates.append(steps * a.batch / (time.perf_counter() - t0))
    print(json.dumps({"images_per_s": statistics.median(rates), "steps": steps, "reps": rates}))


if __name__ == "__main__":
    main()
