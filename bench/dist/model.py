#!/usr/bin/env python3
"""The cost of synchronous data parallelism at scale, on paper
(docs/distributed.md prints its output).

Ring allreduce of S bytes over N ranks: each rank sends and receives
2 (N-1)/N S bytes, in 2 (N-1) steps of S/N bytes, so one allreduce takes

    t = 2 (N-1)/N * S / bandwidth + 2 (N-1) * alpha * buckets

(alpha: the latency of one step, paid once per step of each bucket's ring).
A step computes for t_c seconds, of which backward is about two thirds;
with overlap, the exchange runs during backward and only what is left of
it after backward shows:

    exposed = max(t - f_backward * t_c, t_last)   (t_last: the last bucket alone)
    efficiency = t_c / (t_c + exposed)            (no overlap: exposed = t)

The ways of summing a bucket (osprey train --reduce, --compress), S bytes
of float32 gradients, N ranks, alpha per message latency:

    ring        2 (N-1)/N S / bw + 2 (N-1) alpha       (MPI allreduce)
    butterfly   2 (N-1)/N S / bw + 2 alpha + 2 (N-1) o (reduce-scatter then
                all-gather, N-1 messages at once per phase; o: the cost of
                issuing one message, 2 us)
    fp16/int8   (N-1) S/c / bw + (N-1) alpha           (all-gather of packed
                buckets, c = 2 or 4, then a local sum)

Asynchronous parameter servers (osprey train --param-servers S) on N
nodes: W = N - S workers, each pulling the weights and pushing its
gradient (M bytes each way, in S shards) once per update and computing
meanwhile nothing (a worker waits for its pull). A server's link carries
2 M / S bytes per update of every worker, so with W workers a worker's
update takes

    T = max(t_c + 2 M / bandwidth + 2 S alpha,  W * 2 M / (S * bandwidth))

and the job's throughput, against N nodes that only compute, is
(W / N) * t_c / T: the servers do not compute, and when W / S is large
they are the bottleneck. With --compress int8 the push is M / 4 bytes
(the pull stays float32, M): 2 M becomes 1.25 M in both terms.

Lazy update (osprey train --update lazy) waits for each bucket just before
the next forward pass needs it instead of at the end of the step. Buckets
are produced and summed last layer first, and the first layer's, which
forward needs first, is the last to arrive: the wait is the same as with
overlap, and what lazy update can hide is only the gap between steps
(t_gap: the loader, the progress line), while the optimizer's updates of
the buckets that arrived early, which overlap runs while it waits for the
last one, are done in the forward pass instead:

    exposed_lazy = max(exposed_overlap - t_gap, 0) + u * (1 - 1 / buckets)
    exposed_overlap as above, plus u / buckets (the last bucket's update)

(u: the optimizer's time over all weights; SGD with momentum reads and
writes 16 bytes a parameter, memory-bound: at 20 GB/s on one core, ResNet-50's
25.6 M parameters take 20 ms, ResNet-20's 0.27 M 0.2 ms.)

    bench/dist/model.py
"""
import argparse

GBIT = 1e9 / 8

WORKLOADS = [
    # name, gradient bytes, seconds of compute per step on one node, bucket bytes
    # measured here: one core, batch 64, 152 images/s (bench/dist/run)
    ("ResNet-20 (0.27 M parameters), 0.42 s/step, 1 MiB buckets", 0.272e6 * 4, 0.42, 1 << 20),
    # a GPU node's step, for scale (not measured here)
    ("ResNet-50 (25.6 M parameters), 0.25 s/step, 25 MiB buckets", 25.6e6 * 4, 0.25, 25 << 20),
]
LINKS = [("10 Gbit/s", 10 * GBIT, 25e-6), ("100 Gbit/s", 100 * GBIT, 5e-6)]
NODES = [2, 8, 32, 64, 128, 256]
F_BACKWARD = 2 / 3


def allreduce_s(size, n, bw, alpha, buckets):
    return 2 * (n - 1) / n * size / bw + 2 * (n - 1) * alpha * buckets


def efficiency(size, t_c, n, bw, alpha, overlap, bucket):
    buckets = max(1, -(-int(size) // bucket))
    t = allreduce_s(size, n, bw, alpha, buckets)
    if not overlap:
        return t, t_c / (t_c + t)
    last = allreduce_s(min(size, bucket), n, bw, alpha, 1)
    exposed = max(t - F_BACKWARD * t_c, last)
    return t, t_c / (t_c + exposed)


MEASURED = [  # the two-rank link of bench/dist/slow-network: gradient bytes
    ("LeNet-5", 431080 * 4),
    ("ResNet-20", 272474 * 4),
]


MSG_OVERHEAD = 2e-6
UPDATE_BPS = 20e9 / 16  # parameters a second through SGD with momentum, one core
T_GAP = 0.2e-3          # between two steps (assumed): the prefetched batch, the progress line


def mode_s(mode, size, n, bw, alpha, buckets):
    """One step's exchange of size bytes in buckets, by mode."""
    if mode == "ring":
        return allreduce_s(size, n, bw, alpha, buckets)
    if mode == "butterfly":
        return 2 * (n - 1) / n * size / bw + (2 * alpha + 2 * (n - 1) * MSG_OVERHEAD) * buckets
    c = {"fp16": 2, "int8": 4}[mode]
    return (n - 1) * size / c / bw + (n - 1) * alpha * buckets


def modes_table(name, size, t_c, bucket):
    bw, alpha = 10 * GBIT, 25e-6
    buckets = max(1, -(-int(size) // bucket))
    modes = ["ring", "butterfly", "fp16", "int8"]
    print(f"\n{name}, 10 Gbit/s: exchange per step, and efficiency with overlap\n")
    head = ["nodes"] + modes + [f"{m} eff." for m in modes]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for n in NODES:
        ts = [mode_s(m, size, n, bw, alpha, buckets) for m in modes]
        effs = []
        for m, t in zip(modes, ts):
            last = mode_s(m, min(size, bucket), n, bw, alpha, 1)
            effs.append(t_c / (t_c + max(t - F_BACKWARD * t_c, last)))
        print("| " + " | ".join([str(n)] + [f"{1000 * t:.1f} ms" for t in ts] +
                                [f"{100 * e:.0f}%" for e in effs]) + " |")

def lazy_table(name, size, t_c, bucket):
    """Overlap against lazy update, 10 Gbit/s: exposed exchange plus the
    optimizer's time, and efficiency."""
    bw, alpha = 10 * GBIT, 25e-6
    buckets = max(1, -(-int(size) // bucket))
    u = size / 4 / UPDATE_BPS
    print(f"\n{name}, 10 Gbit/s: overlap against lazy update (optimizer {1000 * u:.1f} ms a step, "
          f"{buckets} bucket{'s' if buckets > 1 else ''})\n")
    head = ["nodes", "exchange", "overlap: exposed + update", "lazy: exposed + update", "overlap eff.", "lazy eff."]
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for n in NODES:
        t = allreduce_s(size, n, bw, alpha, buckets)
        last = allreduce_s(min(size, bucket), n, bw, alpha, 1)
        exposed = max(t - F_BACKWARD * t_c, last)
        over = exposed + u / buckets
        lazy = max(exposed - T_GAP, 0) + u * (1 - 1 / buckets) + u / buckets
        print(f"| {n} | {1000 * t:.1f} ms | {1000 * over:.1f} ms | {1000 * lazy:.1f} ms | "
              f"{100 * t_c / (t_c + over):.1f}% | {100 * t_c / (t_c + lazy):.1f}% |")


def ps_throughput(size, t_c, n, s, bw, alpha, push=1.0):
    """Parameter servers: the share of N compute-only nodes' images/s; push:
    the pushed gradient's bytes over float32's (int8: 1/4)."""
    w = n - s
    moved = (1 + push) * size
    t = max(t_c + moved / bw + 2 * s * alpha, w * moved / (s * bw))
    return w / n * t_c / t


def ps_int8_tables():
    bw, alpha = 10 * GBIT, 25e-6
    print("\nParameter servers with int8 pushes (weights pulled as float32), 10 Gbit/s: images/s "
          "as a share of N nodes that only compute\n")
    for name, size, t_c, bucket in WORKLOADS:
        print(f"{name}\n")
        head = ["nodes"] + [f"{k} {c}" for k in ("1 server", "N/8 servers", "N/2 servers")
                            for c in ("float32", "int8 pushes")]
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for n in NODES:
            row = [str(n)]
            for s in (1, max(1, n // 8), max(1, n // 2)):
                for push in (1.0, 0.25):
                    row.append(f"{100 * ps_throughput(size, t_c, n, s, bw, alpha, push):.0f}%")
            print("| " + " | ".join(row) + " |")
        print()


def ps_tables():
    print("\nAsynchronous parameter servers against synchronous allreduce (no overlap), the same N "
          "nodes: images/s as a share of N nodes that only compute\n")
    for name, size, t_c, bucket in WORKLOADS:
        print(f"{name}\n")
        head = ["nodes"] + [f"{l} {k}" for l, _, _ in LINKS
                            for k in ("sync", "1 server", "N/8 servers", "N/2 servers")]
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for n in NODES:
            row = [str(n)]
            for _, bw, alpha in LINKS:
                _, e = efficiency(size, t_c, n, bw, alpha, False, bucket)
                row.append(f"{100 * e:.0f}%")
                for s in (1, max(1, n // 8), max(1, n // 2)):
                    row.append(f"{100 * ps_throughput(size, t_c, n, s, bw, alpha):.0f}%")
            print("| " + " | ".join(row) + " |")
        print()


def main():
    ap = argparse.ArgumentParser()
    ap.parse_args()
    print("Two ranks, one link (bench/dist/slow-network): the model's exchange time")
    for name, size in MEASURED:
        for label, bw in (("1 Gbit/s", 1 * GBIT), ("100 Mbit/s", 0.1 * GBIT)):
            ts = ", ".join(f"{m} {1000 * mode_s(m, size, 2, bw, 0, 1):5.1f} ms"
                           for m in ("ring", "butterfly", "fp16", "int8"))
            print(f"  {name:10} {label:>10}: {ts}")
    for name, size, t_c, bucket in WORKLOADS:
        print(f"\n{name}: {size / 1e6:.2f} MB of gradients, "
              f"{2 * size / 1e6:.2f} MB sent and received per rank per step (ring, large N)\n")
        head = ["nodes"] + [f"{l} {k}" for l, _, _ in LINKS for k in ("allreduce", "eff. no overlap", "eff. overlap")]
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for n in NODES:
            row = [str(n)]
            for _, bw, alpha in LINKS:
                t, e0 = efficiency(size, t_c, n, bw, alpha, False, bucket)
                _, e1 = efficiency(size, t_c, n, bw, alpha, True, bucket)
                row += [f"{1000 * t:.1f} ms", f"{100 * e0:.0f}%", f"{100 * e1:.0f}%"]
            print("| " + " | ".join(row) + " |")
    for name, size, t_c, bucket in WORKLOADS:
        modes_table(name.split(",")[0], size, t_c, bucket)
    for name, size, t_c, bucket in WORKLOADS:
        lazy_table(name.split(",")[0], size, t_c, bucket)
    ps_tables()
    ps_int8_tables()


if __name__ == "__main__":
    main()
