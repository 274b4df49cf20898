"""The PyTorch peer of `osprey bench`: the same network spec (via
scripts/torchspec.py), batch size, thread count and float32, on random
inputs held in memory; a training step is forward, cross-entropy, backward
and an SGD (momentum 0.9) update. Prints one JSON object like osprey's.

    /usr/bin/python3 bench/nets/torch_bench.py --net SPEC --batch B [--train] --threads T
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "scripts"))
from torchspec import SpecNet  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--net", required=True)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--train", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--steps", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(1)
    net = SpecNet(open(a.net).read())
    x = torch.randn([a.batch] + net.input_shape)
    n_classes = net(x[:1]).shape[1]
    y = torch.randint(0, n_classes, (a.batch,))
    opt = torch.optim.SGD(net.parameters(), lr=1e-4, momentum=0.9)

    if a.train:
        net.train()

        def step():
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(net(x), y)
            loss.backward()
            opt.step()
    else:
        net.eval()

        def step():
            with torch.no_grad():
                net(x)

    t0 = time.perf_counter()
    step()
    one = time.perf_counter() - t0
    steps = a.steps or int(min(max(2.0 / max(one, 1e-6), 3), 10000))
    rates = []
    for _ in range(a.reps):
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        rates.append(steps * a.batch / (time.perf_counter() - t0))
    print(json.dumps({"images_per_s": round(statistics.median(rates), 1), "batch": a.batch,
                      "mode": "train" if a.train else "infer", "threads": a.threads,
                      "steps": steps, "reps": a.reps, "peer": "pytorch " + torch.__version__}))


if __name__ == "__main__":
    main()
