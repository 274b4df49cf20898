#!/usr/bin/python3
"""Writes a multi-label image set for tests/cli/multilabel.sh and
docs/multilabel.md: 64x64 canvases, each holding 0-3 of {circle, square,
triangle} (each shape at most once) in random cells of a 2x2 grid, of
random colour, size and place in the cell, on a random background.

    make_multilabel.py OUT [--train N] [--val N] [--test N] [--seed S]

OUT/img/<n>.png, and the labels three ways: OUT/train.txt and OUT/test.txt
(path<TAB>label,label lines; an image with no shape has an empty field)
and OUT/val.jsonl ({"path": ..., "labels": [...]}). Also OUT/net.cfg, a
small network for the data. The same seed gives the same files. Needs
python3-pil (Debian).
"""
import argparse
import json
import os
import random

from PIL import Image, ImageDraw

SHAPES = ["circle", "square", "triangle"]

SPEC = """# A small CNN for multi-label shapes: 3 labels at 32x32.
[net]
input = 3x32x32
mean = 0.5, 0.5, 0.5
std = 0.25, 0.25, 0.25

[conv]
filters = 16
size = 3
pad = 1
[batchnorm]
[relu]
[maxpool]
size = 2

[conv]
filters = 32
size = 3
pad = 1
[batchnorm]
[relu]
[maxpool]
size = 2

[conv]
filters = 32
size = 3
pad = 1
[batchnorm]
[relu]
[maxpool]
size = 2

[fc]
outputs = 64
[relu]
[fc]
outputs = 3
"""


def colour(rng, avoid=None):
    while True:
        c = tuple(rng.randrange(256) for _ in range(3))
        if avoid is None or sum(abs(a - b) for a, b in zip(c, avoid)) > 200:
            return c


def draw_shape(d, shape, cx, cy, r, fill):
    if shape == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
    elif shape == "square":
        d.rectangle([cx - r, cy - r, cx + r, cy + r], fill=fill)
    else:
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)


def image(rng):
    bg = colour(rng)
    im = Image.new("RGB", (64, 64), bg)
    d = ImageDraw.Draw(im)
    k = rng.choice([0, 1, 1, 2, 2, 2, 3, 3])
    shapes = rng.sample(SHAPES, k)
    cells = rng.sample([(0, 0), (1, 0), (0, 1), (1, 1)], k)
    for shape, (gx, gy) in zip(shapes, cells):
        r = rng.randint(7, 12)
        cx = gx * 32 + rng.randint(r + 1, 31 - r)
        cy = gy * 32 + rng.randint(r + 1, 31 - r)
        draw_shape(d, shape, cx, cy, r, colour(rng, bg))
    return im, sorted(shapes)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--train", type=int, default=480)
    ap.add_argument("--val", type=int, default=120)
    ap.add_argument("--test", type=int, default=150)
    ap.add_argument("--seed", type=int, default=7)
    a = ap.parse_args()
    rng = random.Random(a.seed)
    os.makedirs(os.path.join(a.out, "img"), exist_ok=True)
    n = 0
    sets = {}
    for name, count in (("train", a.train), ("val", a.val), ("test", a.test)):
        rows = []
        for _ in range(count):
            im, labels = image(rng)
            path = f"img/{n:05d}.png"
            im.save(os.path.join(a.out, path))
            rows.append((path, labels))
            n += 1
        sets[name] = rows
    for name in ("train", "test"):
        with open(os.path.join(a.out, f"{name}.txt"), "w") as f:
            f.write(f"# {name}: path<TAB>labels (comma-separated; empty: no shape)\n")
            for path, labels in sets[name]:
                f.write(f"{path}\t{','.join(labels)}\n")
    with open(os.path.join(a.out, "val.jsonl"), "w") as f:
        for path, labels in sets["val"]:
            f.write(json.dumps({"path": path, "labels": labels}) + "\n")
    with open(os.path.join(a.out, "net.cfg"), "w") as f:
        f.write(SPEC)


if __name__ == "__main__":
    main()
