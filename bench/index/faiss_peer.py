#!/usr/bin/python3
"""The FAISS peer for bench/index/run (Debian's python3-faiss, 1.7.3).

Builds one index and prints one JSON object per line: the build (seconds,
bytes per vector from serialize_index), then per search setting recall@10,
queries/s one query at a time on one thread, and queries/s for the whole
batch on THREADS threads. Run with OMP_WAIT_POLICY=PASSIVE (set by the
runner): without it FAISS's OpenMP threads spin against OpenBLAS's and two
threads run slower than one (see the machine notes).

    faiss_peer.py KIND BASE.npy QUERIES.npy GT.npy METRIC THREADS SINGLE_N PARAMS SETTINGS
KIND: flat | hnsw | ivf | ivfpq | binary; PARAMS: JSON (M, efc, nlist, m);
SETTINGS: comma-separated ef or nprobe values ("-" for none).
"""
import json
import sys
import time

import numpy as np
import faiss

K = 10


def recall(found, gt):
    hit = 0
    for row, truth in zip(found, gt[:, :K]):
        hit += len(set(row.tolist()) & set(truth.tolist()))
    return hit / (len(found) * K)


def timed(fn, reps):
    best = float("inf")
    out = None
    for _ in range(reps):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main():
    kind, base_p, q_p, gt_p, metric, threads, single_n, params, settings = sys.argv[1:10]
    threads, single_n, params = int(threads), int(single_n), json.loads(params)
    x, q = np.load(base_p), np.load(q_p)
    gt = np.load(gt_p) if gt_p != "-" else None
    d = x.shape[1] * (8 if kind == "binary" else 1)
    ip = metric == "ip"
    mt = faiss.METRIC_INNER_PRODUCT if ip else faiss.METRIC_L2
    faiss.omp_set_num_threads(threads)
    t0 = time.perf_counter()
    if kind == "flat":
        index = faiss.IndexFlat(d, mt)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, params["M"], mt)
        index.hnsw.efConstruction = params["efc"]
    elif kind == "ivf":
        quant = faiss.IndexFlat(d, mt)
        index = faiss.IndexIVFFlat(quant, d, params["nlist"], mt)
    elif kind == "ivfpq":
        quant = faiss.IndexFlat(d, mt)
        index = faiss.IndexIVFPQ(quant, d, params["nlist"], params["m"], 8, mt)
    elif kind == "binary":
        index = faiss.IndexBinaryFlat(d)
    else:
        raise SystemExit(f"faiss_peer: unknown kind {kind}")
    if not index.is_trained:
        index.train(x)
    index.add(x)
    build = time.perf_counter() - t0
    if kind == "binary":
        size = faiss.serialize_index_binary(index).size
    else:
        size = faiss.serialize_index(index).size
    print(json.dumps({"peer": "faiss", "kind": kind, "build_s": build,
                      "bytes_per_vector": size / len(x), "threads": threads}), flush=True)
    for s in settings.split(","):
        row = {"peer": "faiss", "kind": kind}
        if s != "-":
            v = int(s)
            if kind == "hnsw":
                index.hnsw.efSearch = v
                row["ef"] = v
            else:
                index.nprobe = v
                row["nprobe"] = v
        faiss.omp_set_num_threads(threads)
        tb, (dist, found) = timed(lambda: index.search(q, K), 3)
        faiss.omp_set_num_threads(1)
        qs = q[:single_n]

        def one_at_a_time():
            for i in range(len(qs)):
                index.search(qs[i:i + 1], K)
        t1, _ = timed(one_at_a_time, 3 if single_n >= len(q) else 1)
        row.update({"qps_1": len(qs) / t1, "qps_batch": len(q) / tb})
        if gt is not None:
            row["recall"] = recall(found, gt)
        else:
            row["distances"] = dist[:, :K].tolist()
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
