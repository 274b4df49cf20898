#!/usr/bin/env python3
"""The cost of model parallelism for wide fully connected layers and of
synchronised batch norm at scale, on paper (docs/distributed.md prints its
output; bench/dist/modes prints its byte counts beside the measured ones).

Bytes are those a rank receives per step, as osprey counts them
(osp_rank_timing.comm_bytes): a ring allreduce of S bytes over N ranks
2 (N-1)/N S; an all-gather or reduce-scatter the other ranks' parts; an
all-to-all the other ranks' blocks of this rank's rows. With B samples per
rank, G = N B, an [fc] layer of I inputs and O outputs costs

    data parallel   2 (N-1)/N x 4 (I O + O)               (its gradients)
    model parallel  4 (N-1) B I        all-gather of the inputs
                  + 4 B O (N-1)/N x 2  outputs back, output gradients out
                  + 4 (N-1) B I        reduce-scatter of the input gradients

Data parallelism's cost is fixed by the weights, model parallelism's grows
with the global batch: the split pays while G I is small next to I O,
that is while the global batch is smaller than the layer's width.

Time: bytes / bandwidth plus the latency alpha of each step of each
collective: ring allreduce 2 (N-1) steps (a bucket each), all-gather,
all-to-all and reduce-scatter N-1 each; a small blocking allreduce (batch
norm's sums) 2 log2 N (recursive doubling, Open MPI's choice there). The
model-parallel layers' and batch norm's exchanges sit in the forward and
backward paths (nothing overlaps them); the allreduce can overlap backward
(bench/dist/model.py).

    bench/dist/model_modes.py
"""
import math

GBIT = 1e9 / 8
LINKS = [("10 Gbit/s", 10 * GBIT, 25e-6), ("100 Gbit/s", 100 * GBIT, 5e-6)]
NODES = [2, 4, 8, 32, 64, 128, 256]

# (data-parallel parameters, [fc layers split: (inputs, outputs, input gradient needed)], per-rank batch)
WIDEFC = ((16 * 25 + 16) + (32 * 16 * 25 + 32) + (4096 * 10 + 10),
          [(512, 4096, True), (4096, 4096, True)])
# Krizhevsky's one-column AlexNet: 2.3 M convolution parameters, fc6
# 9216 -> 4096, fc7 4096 -> 4096, fc8 4096 -> 1000 (the classifier stays whole)
ALEXNET = (2_334_080 + 4096 * 1000 + 1000, [(9216, 4096, True), (4096, 4096, True)])

# batch-norm layers' channel counts
RESNET20_BN = [16] * 7 + [32] * 7 + [64] * 7  # 21: 19 in the blocks, 2 on the shortcuts
RESNET50_BN = ([64] + [64, 64, 256, 256] + [64, 64, 256] * 2 + [128, 128, 512, 512] + [128, 128, 512] * 3
               + [256, 256, 1024, 1024] + [256, 256, 1024] * 5 + [512, 512, 2048, 2048] + [512, 512, 2048] * 2)


def step_bytes(net, n, b, model_parallel):
    dp, fcs = net
    if not model_parallel:
        dp += sum(i * o + o for i, o, _ in fcs)
    total = 2 * (n - 1) / n * 4 * dp
    if model_parallel:
        for i, o, dx in fcs:
            ob = o // n
            total += 4 * ((n - 1) * b * i + 2 * b * (o - ob) + ((n - 1) * b * i if dx else 0))
    return total


def step_time(net, n, b, model_parallel, bw, alpha, bucket=25 << 20):
    dp, fcs = net
    if not model_parallel:
        dp += sum(i * o + o for i, o, _ in fcs)
    buckets = max(1, math.ceil(4 * dp / bucket))
    t = step_bytes(net, n, b, model_parallel) / bw + 2 * (n - 1) * alpha * buckets
    if model_parallel:
        t += sum(4 if dx else 3 for _, _, dx in fcs) * (n - 1) * alpha
    return t


def sync_bn_bytes(channels, n):
    """Three allreduces per layer: C + 1, 2C and 2C doubles."""
    return sum(2 * (n - 1) / n * 8 * (5 * c + 1) for c in channels)


def sync_bn_time(channels, n, bw, alpha):
    return sync_bn_bytes(channels, n) / bw + 3 * len(channels) * 2 * math.log2(n) * alpha


def table(title, net, b):
    print(f"\n{title}, {b} samples per rank: MB received per rank per step, and the exchange's time\n")
    head = ["nodes", "global batch", "data parallel MB", "model parallel MB"]
    head += [f"{l} {k}" for l, _, _ in LINKS for k in ("data parallel", "model parallel")]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for n in NODES:
        row = [str(n), str(n * b), f"{step_bytes(net, n, b, False) / 1e6:.1f}",
               f"{step_bytes(net, n, b, True) / 1e6:.1f}"]
        for _, bw, alpha in LINKS:
            row += [f"{1000 * step_time(net, n, b, mp, bw, alpha):.1f} ms" for mp in (False, True)]
        print("| " + " | ".join(row) + " |")


def main():
    table("nets/widefc.cfg (20.2 M parameters, 99% in fc1 and fc2)", WIDEFC, 32)
    table("AlexNet, one column (61 M parameters; fc6 and fc7 split)", ALEXNET, 128)
    print("\nSynchronised batch norm: the statistics' exchanges per step (3 blocking allreduces per layer)\n")
    head = ["nodes"] + [f"{name} {l}" for name in ("ResNet-20", "ResNet-50") for l, _, _ in LINKS]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for n in NODES:
        row = [str(n)]
        for ch in (RESNET20_BN, RESNET50_BN):
            row += [f"{1000 * sync_bn_time(ch, n, bw, alpha):.2f} ms ({sync_bn_bytes(ch, n) / 1e3:.0f} kB)"
                    for _, bw, alpha in LINKS]
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
