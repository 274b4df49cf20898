#!/usr/bin/python3
"""Checks of the serving tests (tests/cli/serve_cluster.sh), run against
live processes on loopback:

  serve_check.py equal-search REF ROUTER ALL_DIR      search answers equal
  serve_check.py equal-annotate REF ROUTER PHOTOS     annotate answers equal
  serve_check.py load ROUTER REF ALL_DIR PHOTOS SECONDS OUT.json
                                                      keep-alive load, every
                                                      answer checked

REF is a worker over the one-shard reference index, ROUTER the router over
the shards; both HOST:PORT. Answers are equal when they hold the same ids
and paths in the same order with scores within 1e-6 (hits whose scores are
within 1e-6 of each other may come in either order: the shards' sums of
products and the one index's may differ in the last bit).
"""
import base64
import glob
import http.client
import json
import os
import random
import sys
import threading
import time

import numpy as np

TOL = 1e-6


def post(addr, path, body, conn=None, headers=None):
    own = conn is None
    if own:
        host, port = addr.rsplit(":", 1)
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
    data = json.dumps(body).encode()
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    conn.request("POST", path, body=data, headers=h)
    r = conn.getresponse()
    text = r.read()
    if own:
        conn.close()
    try:
        return r.status, json.loads(text)
    except ValueError:
        return r.status, {"raw": text.decode(errors="replace")}


def same_hits(a, b, what, key_id="id", key_path="path"):
    """a, b: lists of hits; raises AssertionError with what differs."""
    assert len(a) == len(b), f"{what}: {len(a)} hits against {len(b)}"
    for x, y in zip(a, b):
        assert abs(x["score"] - y["score"]) <= TOL, f"{what}: score {x['score']} against {y['score']}"
    # compare in groups of scores within TOL of their neighbours
    i = 0
    while i < len(a):
        j = i + 1
        while j < len(a) and abs(a[j]["score"] - a[j - 1]["score"]) <= TOL:
            j += 1
        ga = [(h.get(key_id), h.get(key_path)) for h in a[i:j]]
        gb = [(h.get(key_id), h.get(key_path)) for h in b[i:j]]
        if j - i == 1:
            assert ga == gb, f"{what}: hit {i} is {gb} against {ga}"
        else:
            assert sorted(ga, key=str) == sorted(gb, key=str), f"{what}: hits {i}..{j} are {gb} against {ga}"
        i = j


def queries_of(all_dir, n_random=6, seed=3):
    v = np.load(os.path.join(all_dir, "vectors.npy")).astype(np.float32)
    ids = np.load(os.path.join(all_dir, "ids.npy"))
    rng = np.random.default_rng(seed)
    qs = []
    for r in rng.choice(len(v), size=min(6, len(v)), replace=False):
        qs.append(v[r])
    for _ in range(n_random):
        x = rng.standard_normal(v.shape[1]).astype(np.float32)
        qs.append(x / np.linalg.norm(x))
    x = v[0] + 0.05 * rng.standard_normal(v.shape[1]).astype(np.float32)
    qs.append(x)
    return [[float(t) for t in q] for q in qs], sorted(int(i) for i in ids)


def search_bodies(all_dir):
    qs, ids = queries_of(all_dir)
    ks = [1, 5, None, 37, 1000]
    bodies = []
    for i, q in enumerate(qs):
        one = {"vector": q}
        if ks[i % len(ks)] is not None:
            one["k"] = ks[i % len(ks)]
        bodies.append({"queries": [one]})
    # several queries in one body
    bodies.append({"queries": [{"vector": q, "k": 12} for q in qs[:5]]})
    # a filter on an id range: passed on to the shards
    lo, hi = ids[len(ids) // 4], ids[3 * len(ids) // 4]
    bodies.append({"queries": [{"vector": qs[0], "k": 20, "filter": {"idMin": str(lo), "idMax": str(hi)}}]})
    return bodies


def equal_search(ref, router, all_dir):
    n = 0
    for b in search_bodies(all_dir):
        s1, a1 = post(ref, "/v1/vectors:search", b)
        s2, a2 = post(router, "/v1/vectors:search", b)
        assert s1 == 200, f"the reference worker answered {s1}: {a1}"
        assert s2 == 200, f"the router answered {s2}: {a2}"
        assert "partial" not in a2, a2
        assert len(a1["results"]) == len(a2["results"]) == len(b["queries"])
        for q, (r1, r2) in enumerate(zip(a1["results"], a2["results"])):
            assert len(r1["hits"]) > 0
            same_hits(r1["hits"], r2["hits"], f"query {q} of {json.dumps(b)[:80]}")
            n += 1
    print(f"search: {n} queries, the router's answers equal the one index's")


def annotate_body(photos, n, seed=5, uri_every=2, web_k=7):
    files = sorted(f for f in glob.glob(os.path.join(photos, "*", "*")) if "broken" not in f)
    rng = random.Random(seed)
    reqs = []
    for i, f in enumerate(rng.sample(files, n)):
        image = {"source": {"imageUri": f}} if i % uri_every == 0 else {
            "content": base64.b64encode(open(f, "rb").read()).decode()}
        reqs.append({"image": image, "features": [{"type": "LABEL_DETECTION", "maxResults": 3},
                                                  {"type": "WEB_DETECTION", "maxResults": web_k}]})
    return {"requests": reqs}


def same_annotation(r1, r2, what):
    assert set(r1) == set(r2), f"{what}: fields {sorted(r1)} against {sorted(r2)}"
    if "error" in r1:
        assert r1["error"]["code"] == r2["error"]["code"], f"{what}: {r1['error']} against {r2['error']}"
        return
    l1, l2 = r1.get("labelAnnotations", []), r2.get("labelAnnotations", [])
    assert [x["description"] for x in l1] == [x["description"] for x in l2], what
    assert all(abs(x["score"] - y["score"]) <= TOL for x, y in zip(l1, l2)), what
    w1, w2 = r1["webDetection"]["visuallySimilarImages"], r2["webDetection"]["visuallySimilarImages"]
    assert len(w1) > 0, what
    same_hits(w1, w2, what, key_id="id", key_path="url")
    if "embedding" in r1:
        e1, e2 = r1["embedding"]["vector"], r2["embedding"]["vector"]
        assert len(e1) == len(e2) and all(abs(x - y) <= TOL for x, y in zip(e1, e2)), what


def equal_annotate(ref, router, photos):
    body = annotate_body(photos, 6)
    # one image that is no image: its own error, the others answered
    body["requests"].append({"image": {"content": base64.b64encode(b"not an image at all").decode()},
                             "features": [{"type": "LABEL_DETECTION"}, {"type": "WEB_DETECTION"}]})
    s1, a1 = post(ref, "/v1/images:annotate", body)
    s2, a2 = post(router, "/v1/images:annotate", body)
    assert s1 == 200 and s2 == 200, (s1, s2, a1 if s1 != 200 else a2)
    assert "partial" not in a2, a2
    assert len(a1["responses"]) == len(a2["responses"]) == len(body["requests"])
    for i, (r1, r2) in enumerate(zip(a1["responses"], a2["responses"])):
        same_annotation(r1, r2, f"image {i}")
        if i < 6:
            assert "embedding" not in r2, "the router kept an embedding nobody asked for"
            assert len(r2["webDetection"]["visuallySimilarImages"]) == 7
    assert "error" in a2["responses"][-1] and "labelAnnotations" not in a2["responses"][-1], a2["responses"][-1]
    # EMBEDDING asked with WEB_DETECTION: kept; maxResults 0 is the default (10)
    body = annotate_body(photos, 2, seed=9)
    for r in body["requests"]:
        r["features"] = [{"type": "WEB_DETECTION", "maxResults": 0}, {"type": "EMBEDDING"}]
    s1, a1 = post(ref, "/v1/images:annotate", body)
    s2, a2 = post(router, "/v1/images:annotate", body)
    assert s1 == 200 and s2 == 200, (s1, s2, a1, a2)
    for i, (r1, r2) in enumerate(zip(a1["responses"], a2["responses"])):
        assert "embedding" in r2 and len(r2["webDetection"]["visuallySimilarImages"]) == 10, r2.keys()
        same_annotation(r1, r2, f"image {i} (with EMBEDDING)")
    print("annotate: the router's answers equal the one worker's (labels, similar images, errors)")


def load(router, ref, all_dir, photos, seconds, out):
    """Two keep-alive clients, searches and annotations for SECONDS; every
    answer checked against the reference worker's."""
    bodies = search_bodies(all_dir)[:6]
    expected = []
    for b in bodies:
        s, a = post(ref, "/v1/vectors:search", b)
        assert s == 200, a
        expected.append(a)
    ann = annotate_body(photos, 2, seed=11, uri_every=1, web_k=5)
    s, ann_expected = post(ref, "/v1/images:annotate", ann)
    assert s == 200, ann_expected
    stats = {"requests": 0, "search": 0, "annotate": 0, "failures": []}
    lock = threading.Lock()
    stop_at = time.time() + seconds
    host, port = router.rsplit(":", 1)

    def client(seed):
        rng = random.Random(seed)
        conn = http.client.HTTPConnection(host, int(port), timeout=30)
        while time.time() < stop_at:
            kind = "annotate" if rng.random() < 0.3 else "search"
            try:
                if kind == "search":
                    i = rng.randrange(len(bodies))
                    s, a = post(router, "/v1/vectors:search", bodies[i], conn)
                    ok = s == 200 and "partial" not in a
                    if ok:
                        for r1, r2 in zip(expected[i]["results"], a["results"]):
                            same_hits(r1["hits"], r2["hits"], "load")
                else:
                    s, a = post(router, "/v1/images:annotate", ann, conn)
                    ok = s == 200 and "partial" not in a
                    if ok:
                        for i, (r1, r2) in enumerate(zip(ann_expected["responses"], a["responses"])):
                            same_annotation(r1, r2, f"load image {i}")
                err = None if ok else f"{kind}: {s} {json.dumps(a)[:300]}"
            except AssertionError as e:
                err = f"{kind}: a wrong answer: {e}"
            except (OSError, http.client.HTTPException) as e:
                err = f"{kind}: {type(e).__name__}: {e}"
                conn.close()
                conn = http.client.HTTPConnection(host, int(port), timeout=30)
            with lock:
                stats["requests"] += 1
                stats[kind] += 1
                if err:
                    stats["failures"].append(err)
        conn.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    json.dump(stats, open(out, "w"), indent=1)
    print(f"load: {stats['requests']} requests ({stats['search']} searches, {stats['annotate']} annotations), "
          f"{len(stats['failures'])} failed")


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "equal-search":
        equal_search(*args)
    elif cmd == "equal-annotate":
        equal_annotate(*args)
    elif cmd == "load":
        load(args[0], args[1], args[2], args[3], float(args[4]), args[5])
    else:
        sys.exit(f"unknown command {cmd}")
