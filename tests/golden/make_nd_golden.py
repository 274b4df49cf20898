#!/usr/bin/env python3
"""ONNX models of tensors of any rank, exported by PyTorch, for tests/cli/onnx_nd.sh.

usage: make_nd_golden.py OUT_DIR

Writes, for each model M, OUT_DIR/M.onnx, M.input.npy and M.output.npy, and
OUT_DIR/manifest.txt with one line per model. The models:
  vit9, vit13, vit17  a vision transformer's front (patch-embedding
        Conv2d with stride = patch, flatten(2).transpose(1, 2), a class token
        expanded to the batch and concatenated, a position embedding added,
        the class token x[:, 0] read out) and a linear head; opsets 13 and
        17, and 9 (Slice and Squeeze with attributes); vit17_fixed, with a
        fixed batch, is among the bad models
  vittok  the same without the head: N x tokens x features, for embed
  tokens11, tokens13, tokens17  on N x T x D input: Slice with steps,
        Split, chunk, index_select, Gather of one index, sum/mean/amax with and without
        keepdim, Unsqueeze/Squeeze, an Expand of a computed value and a
        Concat of 12 inputs along the last axis
  dense40 a densely connected block of 40 convolutions: Concats of up to 41
        inputs
  rank6, rank6_10  on N x 2 x 3 x 4 x 5 x 2 input (opsets 17 and 10):
        permute, reductions, slices
and bad_nd.txt: models the importer must refuse ('FILE FRAGMENT' lines).
Weights are random with fixed seeds."""
import os
import sys

import numpy as np
import torch
import torch.nn as nn
import onnx
from onnx import TensorProto, helper


class TinyViT(nn.Module):
    def __init__(self, channels=3, patch=4, size=16, dim=32, classes=10, head=True):
        super().__init__()
        self.patch = nn.Conv2d(channels, dim, patch, stride=patch)
        tokens = (size // patch) ** 2
        self.cls = nn.Parameter(torch.randn(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(1, tokens + 1, dim))
        self.head = nn.Linear(dim, classes) if head else None

    def forward(self, x):
        n = x.shape[0]
        x = self.patch(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(n, -1, -1), x], dim=1)
        x = x + self.pos
        return self.head(x[:, 0]) if self.head is not None else x


class Tokens(nn.Module):
    """Shape operators on N x T x D (T = 6, D = 8)."""

    def __init__(self):
        super().__init__()
        self.idx = torch.tensor([3, 0, 3, 5])
        self.w = nn.Parameter(torch.randn(8))

    def forward(self, x):
        a = x[:, 1:6:2, :]                      # Slice with a step: N x 3 x 8
        b, c = torch.split(x, [2, 4], dim=1)    # Split: N x 2 x 8, N x 4 x 8
        d1, d2 = torch.chunk(x, 2, dim=2)       # Split in equal parts: N x 6 x 4 twice
        e = x.index_select(1, self.idx)         # Gather of a list: N x 4 x 8
        f = x[:, -1]                            # Gather of one index: N x 8
        s = x.sum(dim=1, keepdim=True)          # N x 1 x 8
        m = x.mean(dim=-1)                      # N x 6
        mx = x.amax(dim=1)                      # N x 8
        u = f.unsqueeze(1)                      # N x 1 x 8
        g = (u * self.w).expand(-1, 3, -1)      # Expand of a computed value: N x 3 x 8
        parts = [a, b[:, :1].expand(-1, 3, -1), c[:, 1:], g, e[:, 1:], s.expand(-1, 3, -1),
                 mx.unsqueeze(1).expand(-1, 3, -1), m[:, :3].unsqueeze(2).expand(-1, 3, 8),
                 d1[:, :3], d2[:, 3:], x[:, -3:], x[:, 0:3] * 2]
        y = torch.cat(parts, dim=2)             # 12 inputs: N x 3 x 96
        return y.sum(dim=1, keepdim=True).squeeze(1)       # Squeeze: N x 96


class Dense(nn.Module):
    """A densely connected block: each of 40 small convolutions reads the
    concatenation of the input and every output before it; the last
    Concat joins 41 values (DenseNet-201's largest joins 49)."""

    def __init__(self, layers=40, growth=2):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(4 + growth * i, growth, 3, padding=1)
                                   for i in range(layers))

    def forward(self, x):
        feats = [x]
        for conv in self.convs:
            feats.append(torch.relu(conv(torch.cat(feats, 1))))
        return torch.cat(feats, 1).mean(dim=(2, 3))


class Rank6(nn.Module):
    """N x 2 x 3 x 4 x 5 x 2: permute, reduce, slice at rank 6."""

    def forward(self, x):
        y = x.permute(0, 5, 3, 1, 2, 4)          # N x 2 x 4 x 2 x 3 x 5
        y = y[:, :, 1:, :, :, ::2] + 1          # N x 2 x 3 x 2 x 3 x 3
        z = y.amax(dim=(2, 4), keepdim=True)    # N x 2 x 1 x 2 x 1 x 3
        return torch.cat([y.mean(dim=(2, 4), keepdim=True), z, y.sum(dim=2, keepdim=True)[:, :, :, :, :1]], dim=4)


def export(name, model, x, opset, dynamic, out_dir, lines):
    model.eval()
    with torch.no_grad():
        out = model(x)
    path = os.path.join(out_dir, f"{name}.onnx")
    kw = {"dynamic_axes": {"x": {0: "batch"}, "y": {0: "batch"}}} if dynamic else {}
    torch.onnx.export(model, x, path, opset_version=opset, input_names=["x"],
                      output_names=["y"], **kw)
    np.save(os.path.join(out_dir, f"{name}.input.npy"), x.numpy())
    np.save(os.path.join(out_dir, f"{name}.output.npy"), out.numpy())
    lines.append(f"{name}\n")


def write_bad(out_dir):
    """Shape operators the importer must refuse with one clear line."""
    lines = []
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)

    def save(name, nodes, inits, expect):
        graph = helper.make_graph(nodes, "g", [x], [y], inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        onnx.save(model, os.path.join(out_dir, name))
        lines.append(f"{name} {expect}\n")

    ints = lambda name, v: helper.make_tensor(name, TensorProto.INT64, [len(v)], v)
    save("bad_gather_batch.onnx", [helper.make_node("Gather", ["x", "i"], ["y"], name="g", axis=0)],
         [helper.make_tensor("i", TensorProto.INT64, [], [0])], "batch axis")
    save("bad_gather_range.onnx", [helper.make_node("Gather", ["x", "i"], ["y"], name="g", axis=1)],
         [helper.make_tensor("i", TensorProto.INT64, [], [6])], "index 6 outside")
    save("bad_slice_empty.onnx",
         [helper.make_node("Slice", ["x", "s", "e", "a"], ["y"], name="s")],
         [ints("s", [4]), ints("e", [2]), ints("a", [1])], "is empty")
    save("bad_concat_axis.onnx", [helper.make_node("Concat", ["x", "x"], ["y"], name="c", axis=3)],
         [], "axis 3 of a rank-3")
    save("bad_reduce_batch.onnx", [helper.make_node("ReduceSum", ["x", "a"], ["y"], name="r")],
         [ints("a", [0, 1])], "batch axis")
    save("bad_expand.onnx", [helper.make_node("Expand", ["x", "s"], ["y"], name="e")],
         [ints("s", [1, 5, 8])], "cannot broadcast")
    save("bad_split.onnx", [helper.make_node("Split", ["x", "s"], ["y", "z"], name="sp", axis=1)],
         [ints("s", [2, 5])], "does not divide an axis of 6")
    # found by mutating the models above: shape arithmetic past int64, a
    # target dimension past any sample
    save("bad_fold_overflow.onnx",
         [helper.make_node("Mul", ["four", "huge"], ["m"], name="mul"),
          helper.make_node("Reshape", ["x", "m"], ["y"], name="r")],
         [ints("four", [0, 4, 1]), ints("huge", [1, -(1 << 62), 1])], "integer overflow")
    save("bad_reshape_huge.onnx", [helper.make_node("Reshape", ["x", "s"], ["y"], name="r")],
         [ints("s", [0, 32, 1 << 62])], "target dimension")
    # the batch size is unknown: compared with 3, the answer is too
    save("bad_equal_batch.onnx",
         [helper.make_node("Shape", ["x"], ["s"], name="shape"),
          helper.make_node("Equal", ["s", "three"], ["e"], name="eq"),
          helper.make_node("Where", ["e", "s", "s"], ["w"], name="where"),
          helper.make_node("Expand", ["x", "w"], ["y"], name="ex")],
         [ints("three", [3, 6, 8])], "compares the batch size")
    with open(os.path.join(out_dir, "bad_nd.txt"), "w") as f:
        f.writelines(lines)


def main():
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    lines = []
    torch.manual_seed(0)
    vit = TinyViT()
    img = torch.randn(3, 3, 16, 16)
    export("vit13", vit, img, 13, True, out_dir, lines)
    export("vit17", vit, img, 17, True, out_dir, lines)
    export("vit9", vit, img, 9, True, out_dir, lines)  # Slice and Squeeze by attributes
    fixed = []
    export("vit17_fixed", vit, img, 17, False, out_dir, fixed)
    torch.manual_seed(1)
    export("vittok", TinyViT(head=False), img, 17, True, out_dir, lines)
    torch.manual_seed(2)
    tokens = Tokens()
    t = torch.randn(3, 6, 8)
    export("tokens13", tokens, t, 13, True, out_dir, lines)
    export("tokens17", tokens, t, 17, True, out_dir, lines)
    export("tokens11", tokens, t, 11, True, out_dir, lines)  # Split, Squeeze, ReduceSum axes by attributes
    torch.manual_seed(4)
    export("dense40", Dense(), torch.randn(2, 4, 6, 6), 13, True, out_dir, lines)
    torch.manual_seed(3)
    rank6, x6 = Rank6(), torch.randn(2, 2, 3, 4, 5, 2)
    export("rank6", rank6, x6, 17, True, out_dir, lines)
    export("rank6_10", rank6, x6, 10, True, out_dir, lines)
    with open(os.path.join(out_dir, "manifest.txt"), "w") as f:
        f.writelines(lines)
    write_bad(out_dir)
    # a fixed batch: the class token is expanded to 3 samples, not to any
    with open(os.path.join(out_dir, "bad_nd.txt"), "a") as f:
        f.write("vit17_fixed.onnx symbolic batch\n")


if __name__ == "__main__":
    main()
