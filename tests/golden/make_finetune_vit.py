#!/usr/bin/env python3
"""A tiny vision transformer and generated images to fine-tune it on, for
tests/cli/finetune_transformer.sh.

usage: make_finetune_vit.py OUT_DIR [--per-class N]

Writes OUT_DIR/vit.onnx: torchvision's VisionTransformer (24x24 images,
patch 4, 2 encoder blocks of 2 heads, width 32, MLP 64, 4 classes) with
random weights (seed 0; the head, which torchvision zeroes so that every
logit would tie, drawn at random too), exported at opset 17 with a dynamic
batch; OUT_DIR/labels.txt, its 4 classes; and OUT_DIR/data/<class>/<n>.png,
N (default 100) 24x24 RGB images per class: stripes horizontal, vertical
or diagonal, or a checkerboard, of random period (2.5 to 6 pixels), phase
and two random colours, with Gaussian noise (sigma 12). Fixed seeds: the
same files every time."""
import argparse
import contextlib
import io
import os
import warnings

import numpy as np
import torch
import torchvision
from PIL import Image

CLASSES = ["checker", "diagonal", "horizontal", "vertical"]


def write_images(out, per_class):
    rng = np.random.default_rng(3)
    y, x = np.mgrid[0:24, 0:24]
    for name in CLASSES:
        os.makedirs(os.path.join(out, name), exist_ok=True)
        for k in range(per_class):
            p, s = rng.uniform(2.5, 6), rng.uniform(0, 1)
            if name == "checker":
                m = (np.floor(x / p + s) + np.floor(y / p + s)) % 2
            else:
                t = {"horizontal": y, "vertical": x, "diagonal": x + y}[name]
                m = np.floor(t / p + s) % 2
            fg, bg = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
            img = m[..., None] * fg + (1 - m[..., None]) * bg + rng.normal(0, 12, (24, 24, 3))
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(
                os.path.join(out, name, f"{k}.png"))


def write_model(path):
    torch.manual_seed(0)
    vit = torchvision.models.VisionTransformer(image_size=24, patch_size=4, num_layers=2,
                                               num_heads=2, hidden_dim=32, mlp_dim=64,
                                               num_classes=len(CLASSES))
    with torch.no_grad():
        vit.heads.head.weight.normal_(0, 0.2)
    vit.eval()
    with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(vit, torch.randn(1, 3, 24, 24), path, opset_version=17,
                          input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--per-class", type=int, default=100)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    torch.set_num_threads(2)
    write_images(os.path.join(a.out, "data"), a.per_class)
    write_model(os.path.join(a.out, "vit.onnx"))
    with open(os.path.join(a.out, "labels.txt"), "w") as f:
        f.write("".join(c + "\n" for c in CLASSES))


if __name__ == "__main__":
    main()
