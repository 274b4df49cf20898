#!/usr/bin/python3
"""The FAISS peer for bench/index/run (Debian's python3-faiss, 1.7.3).

Two modes, so that the runner can alternate osprey's searches and these:

    faiss_peer.py build KIND BASE.npy METRIC THREADS PARAMS OUT
        builds (train + add) on THREADS threads, writes the index to OUT and
        prints the build seconds and bytes per vector (serialize_index);
    faiss_peer.py search KIND OUT QUERIES.npy GT.npy THREADS SINGLE_N SETTINGS REPS
        per setting (ef or nprobe), the best of REPS passes of queries/s one
        query at a time on one thread (the first SINGLE_N queries) and of the
        whole batch on THREADS threads, with recall@10 (or, with GT "-", the
        distances, for the exactness check of binary codes).

KIND: flat | hnsw | ivf | ivfpq | binary; PARAMS: JSON (M, efc, nlist, m);
SETTINGS: comma-separated values, "-" for none. Run with
OMP_WAIT_POLICY=PASSIVE (the runner sets it): without it FAISS's OpenMP
threads spin against OpenBLAS's and two threads run slower than one (see the
machine notes). One query at a time goes through the Python binding, which
adds a few microseconds a call.
"""
import json
import sys
import time

import numpy as np
import faiss

K = 10


def build(kind, base_p, metric, threads, params, out):
    x = np.load(base_p)
    d = x.shape[1] * (8 if kind == "binary" else 1)
    mt = faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2
    faiss.omp_set_num_threads(threads)
    t0 = time.perf_counter()
    if kind == "flat":
        index = faiss.IndexFlat(d, mt)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, params["M"], mt)
        index.hnsw.efConstruction = params["efc"]
    elif kind == "ivf":
        index = faiss.IndexIVFFlat(faiss.IndexFlat(d, mt), d, params["nlist"], mt)
    elif kind == "ivfpq":
        index = faiss.IndexIVFPQ(faiss.IndexFlat(d, mt), d, params["nlist"], params["m"], 8, mt)
    elif kind == "binary":
        index = faiss.IndexBinaryFlat(d)
    else:
        raise SystemExit(f"faiss_peer: unknown kind {kind}")
    if not index.is_trained:
        index.train(x)
    index.add(x)
    build_s = time.perf_counter() - t0
    if kind == "binary":
        faiss.write_index_binary(index, out)
        size = faiss.serialize_index_binary(index).size
    else:
        faiss.write_index(index, out)
        size = faiss.serialize_index(index).size
    print(json.dumps({"peer": "faiss", "kind": kind, "build_s": build_s,
                      "bytes_per_vector": size / len(x), "threads": threads}), flush=True)


def best_time(fn, reps):
    best, out = float("inf"), None
    for _ in range(reps):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def recall(found, gt):
    hit = 0
    for row, truth in zip(found, gt[:, :K]):
        hit += len(set(row.tolist()) & set(truth.tolist()))
    return hit / (len(found) * K)


def search(kind, path, q_p, gt_p, threads, single_n, settings, reps):
    index = faiss.read_index_binary(path) if kind == "binary" else faiss.read_index(path)
    q = np.load(q_p)
    gt = np.load(gt_p) if gt_p != "-" else None
    qs = q[:single_n]
    for s in settings.split(","):
        row = {"peer": "faiss", "kind": kind}
        if s != "-":
            if kind == "hnsw":
                index.hnsw.efSearch = int(s)
                row["ef"] = int(s)
            else:
                index.nprobe = int(s)
                row["nprobe"] = int(s)
        faiss.omp_set_num_threads(threads)
        tb, (dist, found) = best_time(lambda: index.search(q, K), reps)
        faiss.omp_set_num_threads(1)

        def one_at_a_time():
            for i in range(len(qs)):
                index.search(qs[i:i + 1], K)
        t1, _ = best_time(one_at_a_time, reps)
        row.update({"qps_1": len(qs) / t1, "qps_batch": len(q) / tb})
        if gt is not None:
            row["recall"] = recall(found, gt)
        else:
            row["distances"] = dist[:, :K].tolist()
        print(json.dumps(row), flush=True)


def main():
    a = sys.argv[1:]
    if len(a) == 7 and a[0] == "build":
        build(a[1], a[2], a[3], int(a[4]), json.loads(a[5]), a[6])
    elif len(a) == 9 and a[0] == "search":
        search(a[1], a[2], a[3], a[4], int(a[5]), int(a[6]), a[7], int(a[8]))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
