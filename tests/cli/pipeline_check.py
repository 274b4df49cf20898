"""Checks an output folder of 'osprey tag --embed': every expected image
exactly once in tags.jsonl, catalog.db and (if readable) vectors.npy /
ids.npy, each file whole and the three consistent with each other.

usage: pipeline_check.py DIR PATHS_FILE   (one expected path a line)"""
import json
import sqlite3
import sys

import numpy as np

out, paths_file = sys.argv[1], sys.argv[2]
want = {l.rstrip("\n") for l in open(paths_file) if l.strip()}

with open(out + "/tags.jsonl", "rb") as f:
    data = f.read()
assert data.endswith(b"\n"), "tags.jsonl ends in a partial line"
rows = [json.loads(l) for l in data.decode().splitlines()]
paths = [r["path"] for r in rows]
assert len(paths) == len(set(paths)), "an image is in tags.jsonl twice: %s" % sorted(
    p for p in set(paths) if paths.count(p) > 1)[:3]
assert set(paths) == want, "tags.jsonl: %d missing, %d unexpected" % (len(want - set(paths)), len(set(paths) - want))
ok_ids = sorted(r["id"] for r in rows if "error" not in r)

db = sqlite3.connect("file:%s/catalog.db?mode=ro" % out, uri=True)
cat = dict(db.execute("select path, id from images").fetchall())
assert set(cat) == want, "catalog.db: %d missing, %d unexpected" % (len(want - set(cat)), len(set(cat) - want))
assert db.execute("select count(*) from images").fetchone()[0] == len(want)
assert {r["path"]: r["id"] for r in rows} == cat, "ids differ between tags.jsonl and catalog.db"
committed = dict(db.execute("select key, value from state").fetchall())
assert committed["tags_bytes"] == len(data), "tags.jsonl has %d bytes, %d committed" % (len(data), committed["tags_bytes"])

vectors, ids = np.load(out + "/vectors.npy"), np.load(out + "/ids.npy")
assert len(vectors) == len(ids) == committed["rows"] == len(ok_ids), (len(vectors), len(ids), committed["rows"], len(ok_ids))
assert sorted(ids.tolist()) == ok_ids, "ids.npy differs from the ok rows of tags.jsonl"
for i, row in db.execute("select id, row from images where status = 'ok'"):
    assert ids[row] == i, "catalog row %d is not id %d in ids.npy" % (row, i)
assert np.isfinite(vectors).all()
print("%s: %d images once each (%d with vectors)" % (out, len(want), len(ok_ids)))
