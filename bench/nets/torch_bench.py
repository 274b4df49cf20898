"""The PyTorch peer of `osprey bench`: the same network, batch size, thread
count and float32, on random inputs held in memory; a training step is
forward, cross-entropy, backward and an SGD (momentum 0.9) update. Prints
one JSON object like osprey's, with the peak resident memory after the
imports (Python and PyTorch's libraries, before any model) as rss_base_kb.

The network is built from the spec by scripts/torchspec.py, or with --plain
written as a user writes it (bench/nets/plain_nets.py, same layers and
parameter count) and trained by the plain loop a user writes: nn.Module,
nn.CrossEntropyLoss, torch.optim.SGD, zero_grad(set_to_none=True),
loss.backward(), optimizer.step().

The settings that PyTorch reads from the environment (OMP_WAIT_POLICY,
GOMP_SPINCOUNT, OPENBLAS_CORETYPE, OPENBLAS_NUM_THREADS,
ATEN_CPU_CAPABILITY) are the caller's; --no-mkldnn and --channels-last are
the two that a program sets for itself.

    /usr/bin/python3 bench/nets/torch_bench.py --net SPEC --batch B [--train] --threads T
                     [--plain] [--channels-last] [--no-mkldnn] [--reps R] [--seconds S]
"""
import argparse
import json
import os
import resource
import statistics
import sys
import time

import torch
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "scripts"))
sys.path.insert(0, HERE)
from torchspec import SpecNet  # noqa: E402
import plain_nets  # noqa: E402

RSS_BASE_KB = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def count(net):
    return sum(p.numel() for p in net.parameters())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--net", required=True)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--train", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=2.0, help="about how long a repetition is")
    ap.add_argument("--steps", type=int, default=0)
    ap.add_argument("--plain", action="store_true",
                    help="the network as a user writes it (plain_nets.py) and a plain loop")
    ap.add_argument("--channels-last", action="store_true",
                    help="module and input in channels_last memory format")
    ap.add_argument("--no-mkldnn", action="store_true",
                    help="torch.backends.mkldnn.enabled = False (convolutions without oneDNN)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    if a.no_mkldnn:
        torch.backends.mkldnn.enabled = False
    torch.manual_seed(1)
    spec = SpecNet(open(a.net).read())
    if a.plain:
        name = os.path.splitext(os.path.basename(a.net))[0]
        net = plain_nets.NETS[name]()
        if count(net) != count(spec):
            sys.exit(f"plain_nets.{name}: {count(net)} parameters, the spec {count(spec)}")
        shape = spec.input_shape
        del spec
    else:
        net, shape = spec, spec.input_shape
    x = torch.randn([a.batch] + shape)
    if a.channels_last:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        n_classes = net.eval()(x[:2]).shape[1]
    y = torch.randint(0, n_classes, (a.batch,))

    if a.train and a.plain:
        model = net.train()
        criterion = nn.CrossEntropyLoss()
        optimizer = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)

        def step():
            optimizer.zero_grad(set_to_none=True)
            loss = criterion(model(x), y)
            loss.backward()
            optimizer.step()
    elif a.train:
        net.train()
        opt = torch.optim.SGD(net.parameters(), lr=1e-4, momentum=0.9)

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

    step()  # warm-up: first-run allocations, oneDNN's kernels
    t0 = time.perf_counter()
    step()
    one = time.perf_counter() - t0
    steps = a.steps or int(min(max(a.seconds / max(one, 1e-6), 3), 10000))
    rates = []
    for _ in range(a.reps):
        t0 = time.perf_counter()
        for _ in range(steps):
            step()
        rates.append(steps * a.batch / (time.perf_counter() - t0))
    print(json.dumps({"images_per_s": round(statistics.median(rates), 1), "batch": a.batch,
                      "mode": "train" if a.train else "infer", "threads": a.threads,
                      "steps": steps, "reps": a.reps, "params": count(net),
                      "rss_base_kb": RSS_BASE_KB,
                      "rss_peak_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                      "peer": "pytorch " + torch.__version__ + (" plain" if a.plain else "")}))


if __name__ == "__main__":
    main()
