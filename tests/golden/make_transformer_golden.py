"""Golden data for the transformer operators of the ONNX importer: small
PyTorch modules on N x T x D tokens (random weights, fixed seed), exported
by torch.onnx at several opsets, with PyTorch's outputs on a fixed input.

    /usr/bin/python3 tests/golden/make_transformer_golden.py OUT_DIR

writes, for each model M, OUT_DIR/M.onnx, M.input.npy and M.output.npy,
OUT_DIR/manifest.txt with one line per model (M and the layer types its
import must hold, comma-separated; !T: must not hold), and the hostile models the importer
must refuse (bad_models.txt: 'FILE MESSAGE-FRAGMENT' lines)."""
import math
import os
import sys

import numpy as np
import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F
from onnx import TensorProto, helper

torch.set_num_threads(2)


class Block(nn.Module):
    """LayerNorm, Linear on the last axis (MatMul + Add), GELU, a softmax
    over the last axis: the pieces of a ViT's MLP."""

    def __init__(self, d=16, hidden=32):
        super().__init__()
        self.ln = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, hidden)
        self.fc2 = nn.Linear(hidden, d, bias=False)
        self.ln2 = nn.LayerNorm([7, d], eps=1e-3)

    def forward(self, x):
        h = self.fc2(F.gelu(self.fc1(self.ln(x))))
        return torch.softmax(self.ln2(x + h), dim=-1)


class Attention(nn.Module):
    """Multi-head self-attention written out as ViT and DeiT write it:
    q @ k^T * scale, softmax over the keys, @ v, heads merged. scaling
    "div" divides the scores by sqrt(d) instead; "query" scales q before
    the product, as nn.MultiheadAttention does."""

    def __init__(self, d=16, heads=4, scaling="mul"):
        super().__init__()
        self.heads, self.dh, self.scaling = heads, d // heads, scaling
        self.scale = self.dh ** -0.5
        self.q, self.k, self.v = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.proj = nn.Linear(d, d)
        self.norm = nn.LayerNorm(d)

    def forward(self, x):
        n, t, d = x.shape
        h = self.norm(x)
        split = lambda y: y.reshape(n, t, self.heads, d // self.heads).permute(0, 2, 1, 3)
        q, k, v = split(self.q(h)), split(self.k(h)), split(self.v(h))
        if self.scaling == "div":
            scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.dh)
        elif self.scaling == "query":
            scores = (q * self.scale) @ k.transpose(-2, -1)
        else:
            scores = (q @ k.transpose(-2, -1)) * self.scale
        attn = torch.softmax(scores, dim=-1)
        y = (attn @ v).permute(0, 2, 1, 3).reshape(n, t, d)
        return x + self.proj(y)


class Encoder(nn.Module):
    """A ViT encoder block (pre-norm attention and MLP, both residual) on
    N x 7 x 16 tokens."""

    def __init__(self, d=16):
        super().__init__()
        self.attn = Attention(d)
        self.norm = nn.LayerNorm(d)
        self.fc1, self.fc2 = nn.Linear(d, 4 * d), nn.Linear(4 * d, d)

    def forward(self, x):
        x = self.attn(x)
        return x + self.fc2(F.gelu(self.fc1(self.norm(x))))


class NearMiss(nn.Module):
    """Forms close to the folded patterns that must not fold: a GELU with
    0.6 for 0.5 (computed piece by piece), and a layer norm written out
    whose weight spans two axes while it normalises one (folded without
    its affine part, the Mul kept)."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.rand(7, 16) + 0.5)

    def forward(self, x):
        g = x * 0.6 * (1.0 + torch.erf(x / math.sqrt(2.0)))
        m = g.mean(-1, keepdim=True)
        v = (g - m).pow(2).mean(-1, keepdim=True)
        return (g - m) / torch.sqrt(v + 1e-5) * self.w


class TanhGelu(nn.Module):
    """nn.GELU(approximate='tanh') between two linear layers."""

    def __init__(self, d=16):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d, 2 * d), nn.Linear(2 * d, d)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class ErfNet(nn.Module):
    """Erf outside a GELU, and a softmax over a middle axis."""

    def forward(self, x):
        return torch.softmax(torch.erf(x * 0.7), dim=1)


def export(name, model, opset, out_dir, shape=(2, 7, 16), dynamic=True):
    torch.manual_seed(7)
    x = torch.randn(*shape)
    path = os.path.join(out_dir, f"{name}.onnx")
    torch.onnx.export(model, x, path, opset_version=opset, input_names=["input"],
                      output_names=["output"],
                      dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}} if dynamic else None)
    with torch.no_grad():
        out = model(x)
    np.save(os.path.join(out_dir, f"{name}.input.npy"), x.numpy())
    np.save(os.path.join(out_dir, f"{name}.output.npy"), out.numpy())


def write_bad_models(out_dir):
    lines = []

    def save(name, nodes, inputs, inits=(), opset=17, expect=""):
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
        graph = helper.make_graph(nodes, "g", inputs, [y], list(inits))
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        onnx.save(model, os.path.join(out_dir, name))
        lines.append(f"{name} {expect}\n")

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 8])
    # A scale of the wrong size.
    w = helper.make_tensor("w", TensorProto.FLOAT, [5], [1.0] * 5)
    save("bad_layernorm_scale.onnx",
         [helper.make_node("LayerNormalization", ["x", "w"], ["y"], name="ln")], [x], [w],
         expect="scale of 5 and bias of 0 values for 8 normalised values")
    # Normalising over the batch axis too.
    w8 = helper.make_tensor("w", TensorProto.FLOAT, [8], [1.0] * 8)
    save("bad_layernorm_axis.onnx",
         [helper.make_node("LayerNormalization", ["x", "w"], ["y"], name="ln", axis=0)], [x], [w8],
         expect="axis 0 of a rank-3 tensor")
    # Two computed operands that do not fit.
    save("bad_matmul_shapes.onnx",
         [helper.make_node("MatMul", ["x", "x"], ["y"], name="mm")], [x],
         expect="8 columns against 4 rows")
    # A constant operand of rank 3.
    w3 = helper.make_tensor("w", TensorProto.FLOAT, [1, 8, 2], [0.5] * 16)
    save("bad_matmul_rank.onnx",
         [helper.make_node("MatMul", ["x", "w"], ["y"], name="mm")], [x], [w3],
         expect="constant second operand of rank 3")
    # A softmax over the batch axis.
    save("bad_softmax_batch.onnx",
         [helper.make_node("Softmax", ["x"], ["y"], name="sm", axis=0)], [x],
         expect="softmax over axis 0")
    with open(os.path.join(out_dir, "bad_models.txt"), "w") as f:
        f.writelines(lines)


def main():
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    # (name, builder, opset, layer types the import must hold)
    models = [
        ("block_opset17", Block, 17, "layernorm,fc,gelu,softmax"),
        ("block_opset13", Block, 13, "layernorm,fc,gelu,softmax"),
        ("block_opset11", Block, 11, "layernorm,fc,gelu,softmax"),
        ("block_opset9", Block, 9, "layernorm,fc,gelu,softmax"),
        ("attention_opset17", Attention, 17, "layernorm,fc,attention"),
        ("attention_opset13", Attention, 13, "layernorm,fc,attention"),
        ("attention_div_opset13", lambda: Attention(scaling="div"), 13, "attention"),
        ("attention_query_opset11", lambda: Attention(scaling="query"), 11, "attention"),
        ("encoder_opset17", Encoder, 17, "layernorm,fc,attention,gelu"),
        ("encoder_opset13", Encoder, 13, "layernorm,fc,attention,gelu"),
        ("encoder_opset10", Encoder, 10, "layernorm,fc,attention,gelu"),
        ("erf_opset13", ErfNet, 13, "erf,softmax"),
        ("gelu_tanh_opset13", TanhGelu, 13, "gelu,fc,!tanh,!mul"),
        ("near_miss_opset13", NearMiss, 13, "erf,layernorm,!gelu"),
    ]
    manifest = ""
    for name, build, opset, types in models:
        torch.manual_seed(1234)
        model = build().eval()
        export(name, model, opset, out_dir)
        manifest += f"{name} {types}\n"
    with open(os.path.join(out_dir, "manifest.txt"), "w") as f:
        f.write(manifest)
    write_bad_models(out_dir)


if __name__ == "__main__":
    main()
