#!/usr/bin/env python3
"""ONNX models whose batch leaves the first axis, for tests/cli/onnx_mha.sh.

usage: make_mha_golden.py OUT_DIR

nn.MultiheadAttention's export moves the batch to axis 1, merges it with the
heads (N * H) and the tokens (T * N) by Reshape and brings it back first at
the end. Writes, for each model M, OUT_DIR/M.onnx, M.input.npy (3 samples)
and M.output.npy, and OUT_DIR/manifest.txt with one line per model:
  tvit11, tvit13, tvit17  torchvision's VisionTransformer (image 32, patch
        8, 2 layers, 2 heads, width 16, MLP 32), opsets 11, 13 and 17
  mha11, mha13, mha17  nn.MultiheadAttention(16, 2, batch_first=True) as
        self-attention on N x 7 x 16 tokens, then a residual and a Linear
  tswin11, tswin13, tswin17  torchvision's SwinTransformer (image 32, patch
        4, width 16, two stages of 2 blocks, 2 heads, 4x4 windows): the
        window partition merges the batch with the windows (N x 4 windows
        in the first stage, whose second block shifts them and adds the
        mask computed from shapes; one window in the second)
  tswinpad17  the same on 24x24 images, opset 17: 6x6 and 3x3 feature maps,
        padded to whole windows (Pad of N x H x W x C) and cropped back
  tmaxvit13, tmaxvit17  torchvision's MaxVit (image 32, two stages of one
        block, partition 2, head width 8): its attention is two Einsums,
        "B G H I D, B G H J D -> B G H I J" (Q K^T) and "B G H I J, B G H J
        D -> B G H I D" (by V), with a relative position bias between
  einsum13  the two forms on lower-case letters, N x 3 x 5 x 4 operands
and bad_mha.txt: models whose batch is left where osprey cannot compute
them per sample ('FILE FRAGMENT' lines). Weights are random, fixed seeds,
dynamic batch."""
import os
import sys

import numpy as np
import onnx
import torch
import torch.nn as nn
import torchvision
from onnx import TensorProto, helper

torch.set_num_threads(2)


class Einsums(nn.Module):
    """q k^T, then by v, as einsum writes them (and MaxViT does)."""
    def forward(self, x):
        q, k, v = x, x * 0.5 + 1, x.flip(-1)
        s = torch.einsum("nhid,nhjd->nhij", q, k).softmax(-1)
        return torch.einsum("nhij,nhjd->nhid", s, v)


class SelfAttention(nn.Module):
    def __init__(self, d=16, heads=2):
        super().__init__()
        self.mha = nn.MultiheadAttention(d, heads, batch_first=True)
        self.fc = nn.Linear(d, 5)

    def forward(self, x):
        y, _ = self.mha(x, x, x, need_weights=False)
        return self.fc(x + y)


def export(name, model, x, opset, out_dir, lines):
    model.eval()
    with torch.no_grad():
        out = model(x)
    torch.onnx.export(model, x[:1], os.path.join(out_dir, f"{name}.onnx"), opset_version=opset,
                      input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "batch"}, "y": {0: "batch"}})
    np.save(os.path.join(out_dir, f"{name}.input.npy"), x.numpy())
    np.save(os.path.join(out_dir, f"{name}.output.npy"), out.numpy())
    lines.append(f"{name}\n")


def write_bad(out_dir):
    """The batch moved to axis 1 of N x 6 x 8 and left there, or used
    where a sample's values would mix."""
    lines = []
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    ints = lambda name, v: helper.make_tensor(name, TensorProto.INT64, [len(v)], v)
    tr = helper.make_node("Transpose", ["x"], ["t"], name="tr", perm=[1, 0, 2])

    def save(name, nodes, inits, expect):
        graph = helper.make_graph([tr] + nodes, "g", [x], [y], inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
        onnx.save(model, os.path.join(out_dir, name))
        lines.append(f"{name} {expect}\n")

    # (6, N, 8) as the output
    save("bad_mha_output.onnx", [helper.make_node("Relu", ["t"], ["y"], name="relu")], [],
         "has its batch in axis 1")
    # the same through an Identity of a layer computed with the batch first
    save("bad_mha_identity.onnx",
         [helper.make_node("Relu", ["x"], ["r"], name="relu"),
          helper.make_node("Transpose", ["r"], ["t2"], name="tr2", perm=[1, 0, 2]),
          helper.make_node("Identity", ["t2"], ["y"], name="id")], [],
         "has its batch in axis 1")
    # (6, N, 8) reshaped to (N, 48): each sample would take another's values
    save("bad_mha_reshape.onnx",
         [helper.make_node("Shape", ["x"], ["s"], name="shape"),
          helper.make_node("Gather", ["s", "zero"], ["n"], name="g", axis=0),
          helper.make_node("Concat", ["n", "f48"], ["target"], name="cat", axis=0),
          helper.make_node("Reshape", ["t", "target"], ["y"], name="r")],
         [ints("zero", [0]), ints("f48", [48])], "node 'r' (Reshape): a reshape that mixes")
    # a softmax over the axis before the batch
    save("bad_mha_softmax.onnx",
         [helper.make_node("Softmax", ["t"], ["s"], name="sm", axis=0),
          helper.make_node("Transpose", ["s"], ["y"], name="back", perm=[1, 0, 2])], [],
         "node 'sm' (Softmax): its input 't' has the batch in axis 1")
    # a constant that spans the batch's axis
    save("bad_mha_const.onnx",
         [helper.make_node("Mul", ["t", "c"], ["m"], name="mul"),
          helper.make_node("Transpose", ["m"], ["y"], name="back", perm=[1, 0, 2])],
         [helper.make_tensor("c", TensorProto.FLOAT, [6, 1, 1], [0.5] * 6)],
         "node 'mul' (Mul): its input 't' has the batch in axis 1")
    # an operator without a per-sample form there
    save("bad_mha_reduce.onnx",
         [helper.make_node("ReduceSum", ["t", "ax"], ["r"], name="sum", keepdims=1),
          helper.make_node("Transpose", ["r"], ["y"], name="back", perm=[1, 0, 2])],
         [ints("ax", [2])], "node 'sum' (ReduceSum): its input 't' has the batch in axis 1")
    # einsum equations other than batched matrix products, and Einsum
    # before opset 12 (where ONNX has none)
    def einsum_model(name, eq, opset, expect):
        e = helper.make_node("Einsum", ["x", "x"], ["y"], name="es", equation=eq)
        graph = helper.make_graph([e], "g", [x], [y], [])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        onnx.save(model, os.path.join(out_dir, name))
        lines.append(f"{name} {expect}\n")

    einsum_model("bad_einsum_out.onnx", "nij,nkj->nji", 13,
                 "node 'es' (Einsum): equation 'nij,nkj->nji': osprey maps batched matrix products")
    einsum_model("bad_einsum_sum.onnx", "nij,nij->n", 13, "node 'es' (Einsum): equation")
    einsum_model("bad_einsum_dot.onnx", "i,i->", 13, "osprey maps batched matrix products")
    einsum_model("bad_einsum_dots.onnx", "...ij,...jk->...ik", 13,
                 "osprey maps two operands of letters")
    einsum_model("bad_einsum_opset.onnx", "nij,nkj->nik", 11, "Einsum")
    with open(os.path.join(out_dir, "bad_mha.txt"), "w") as f:
        f.writelines(lines)


def main():
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    lines = []
    torch.manual_seed(0)
    vit = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2,
                                               num_heads=2, hidden_dim=16, mlp_dim=32)
    with torch.no_grad():  # torchvision zeroes the head: random weights everywhere
        for p in vit.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    img = torch.randn(3, 3, 32, 32)
    export("tvit11", vit, img, 11, out_dir, lines)  # Softmax flattening from its axis
    export("tvit13", vit, img, 13, out_dir, lines)
    export("tvit17", vit, img, 17, out_dir, lines)
    torch.manual_seed(1)
    mha = SelfAttention()
    t = torch.randn(3, 7, 16)
    export("mha11", mha, t, 11, out_dir, lines)
    export("mha13", mha, t, 13, out_dir, lines)
    export("mha17", mha, t, 17, out_dir, lines)
    torch.manual_seed(2)
    swin = torchvision.models.SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[2, 2],
                                              num_heads=[2, 2], window_size=[4, 4],
                                              stochastic_depth_prob=0.0, num_classes=10)
    with torch.no_grad():  # the position bias table starts near 0: random everywhere
        for p in swin.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    img = torch.randn(3, 3, 32, 32)
    export("tswin11", swin, img, 11, out_dir, lines)
    export("tswin13", swin, img, 13, out_dir, lines)
    export("tswin17", swin, img, 17, out_dir, lines)
    export("tswinpad17", swin, torch.randn(3, 3, 24, 24), 17, out_dir, lines)
    torch.manual_seed(3)
    maxvit = torchvision.models.MaxVit(input_size=(32, 32), stem_channels=8, partition_size=2,
                                       block_channels=[16, 32], block_layers=[1, 1], head_dim=8,
                                       stochastic_depth_prob=0.0, num_classes=10)
    with torch.no_grad():  # the position bias table starts near 0: random everywhere
        for p in maxvit.parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    img = torch.randn(3, 3, 32, 32)
    export("tmaxvit13", maxvit, img, 13, out_dir, lines)
    export("tmaxvit17", maxvit, img, 17, out_dir, lines)
    export("einsum13", Einsums(), torch.randn(3, 3, 5, 4), 13, out_dir, lines)
    with open(os.path.join(out_dir, "manifest.txt"), "w") as f:
        f.writelines(lines)
    write_bad(out_dir)


if __name__ == "__main__":
    main()
