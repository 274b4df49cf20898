"""Golden data for the ONNX importer: torchvision networks (random weights,
fixed seed, non-trivial batch-norm statistics) and a network of the other
supported operators, exported to ONNX by PyTorch, with PyTorch's outputs and
pooled features on a fixed input.

    /usr/bin/python3 tests/golden/make_onnx_golden.py OUT_DIR [--full]

writes, for each model M, OUT_DIR/M.onnx, M.input.npy, M.output.npy and
M.features.npy, and OUT_DIR/manifest.txt with one line per model:

    M FEATURES_LAYER

where FEATURES_LAYER is the osprey layer that holds the pooled features
(the ONNX node's name as `osprey import` names layers). Without --full the
networks run at small input sizes (for `make test`); --full adds vgg11 and
runs everything at 224x224 (`make golden`)."""
import os
import sys

import numpy as np
import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision

torch.set_num_threads(2)


def layer_name(node_name):
    """The layer name `osprey import` gives an ONNX node (src/io/onnx_import.c)."""
    name = node_name.lstrip("/").replace("/", ".")
    return "".join(c if c.isalnum() or c in "_-." else "_" for c in name)


def randomize_batchnorm(model):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 2.0)


class OpsNet(nn.Module):
    """Every other operator the importer maps, in one small network."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.dil = nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=2)
        self.se_fc = nn.Conv2d(8, 8, 1)
        self.conv_valid = nn.Conv2d(8, 6, 3)
        self.scale = nn.Parameter(torch.rand(1, 6, 1, 1) + 0.5)
        self.shift = nn.Parameter(torch.randn(6, 1, 1) * 0.1)
        self.proj = nn.Parameter(torch.randn(6 * 9 * 9, 12) * 0.1)
        self.bn2 = nn.BatchNorm2d(6)
        self.fc = nn.Linear(12 + 6, 10)

    def forward(self, x):
        x = F.leaky_relu(self.bn1(self.conv1(x)), 0.1)                 # Conv, BN, LeakyRelu
        x = F.hardswish(self.dil(F.pad(x, (0, 1, 0, 1))))              # Pad, dilated grouped Conv
        s = F.hardsigmoid(self.se_fc(x.mean(dim=(2, 3), keepdim=True)))  # ReduceMean, HardSigmoid
        x = x * s                                                       # Mul (broadcast)
        x = F.max_pool2d(x, 3, stride=2, ceil_mode=True)                # MaxPool ceil_mode
        x = torch.clamp(self.conv_valid(F.pad(x, (1, 1, 1, 1), mode="reflect")), -1.0, 2.0)  # Clip
        x = x * self.scale - self.shift                                 # Mul, Sub by constants
        x = torch.tanh(x) / 2.0 + torch.sigmoid(x)                      # Tanh, Div, Sigmoid, Add
        x = self.bn2(F.avg_pool2d(x, 2, stride=1, padding=1, count_include_pad=False))  # AveragePool, BN
        pooled = x.mean(dim=(2, 3))                                     # ReduceMean keepdims=0
        t = x.permute(0, 2, 3, 1)                                       # Transpose
        flat = t.reshape(t.size(0), -1)                                 # Shape/Gather/.../Reshape
        h = torch.relu(flat @ self.proj)                                # MatMul
        out = self.fc(torch.cat([h, pooled], dim=1))                    # Concat, Gemm
        return torch.softmax(out, dim=1)                                # Softmax


def features_of(name, model, x):
    """PyTorch's pooled features of each network."""
    if name == "mobilenet_v2":
        return F.adaptive_avg_pool2d(model.features(x), 1)
    if name == "squeezenet1_1":
        return model.classifier[:4](model.features(x))
    if name.startswith("opsnet"):
        return None
    got = {}
    handle = model.avgpool.register_forward_hook(lambda m, i, o: got.setdefault("f", o))
    model(x)
    handle.remove()
    return got["f"]


def export(name, model, size, opset, dynamic, keep_bn, out_dir):
    torch.manual_seed(7)
    x = torch.randn(2, 3, size, size)
    path = os.path.join(out_dir, f"{name}.onnx")
    mode = torch.onnx.TrainingMode.PRESERVE if keep_bn else torch.onnx.TrainingMode.EVAL
    torch.onnx.export(model, x, path, opset_version=opset, input_names=["input"],
                      output_names=["output"], training=mode, do_constant_folding=not keep_bn,
                      dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}} if dynamic else None)
    with torch.no_grad():
        out = model(x)
        feats = features_of(name, model, x)
    np.save(os.path.join(out_dir, f"{name}.input.npy"), x.numpy())
    np.save(os.path.join(out_dir, f"{name}.output.npy"), out.numpy())
    layer = "-"
    if feats is not None:
        np.save(os.path.join(out_dir, f"{name}.features.npy"), feats.numpy())
        graph = onnx.load(path).graph
        pools = [n for n in graph.node if n.op_type in ("GlobalAveragePool", "AveragePool", "ReduceMean")]
        layer = layer_name(pools[-1].name or pools[-1].output[0])
    return f"{name} {layer}\n"


def write_bad_models(out_dir):
    """Models the importer must refuse with a clear message:
    bad_<what>.onnx, and bad_models.txt with 'FILE MESSAGE-FRAGMENT' lines."""
    from onnx import TensorProto, helper
    lines = []

    def save(name, graph, opset=13, expect=""):
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
        onnx.save(model, os.path.join(out_dir, name))
        lines.append(f"{name} {expect}\n")

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3, 8, 8])
    # An operator osprey does not implement.
    save("bad_unsupported.onnx", helper.make_graph(
        [helper.make_node("Det", ["x"], ["y"], name="det")], "g", [x], [y]),
        expect="operator Det")
    # A cycle: a -> b -> a.
    save("bad_cycle.onnx", helper.make_graph(
        [helper.make_node("Relu", ["b"], ["a"], name="r1"),
         helper.make_node("Add", ["x", "a"], ["b"], name="r2"),
         helper.make_node("Relu", ["b"], ["y"], name="r3")], "g", [x], [y]),
        expect="cycle")
    # An initializer that declares far more values than it holds.
    def raw_tensor(dims, values):
        t = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=dims)
        t.float_data.extend(values)
        return t

    big = raw_tensor([1 << 20, 1 << 20, 3, 3], [])
    save("bad_huge.onnx", helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], name="conv")], "g", [x], [y], [big]),
        expect="constant of more than")
    short = raw_tensor([3, 3, 3, 3], [0.5] * 10)
    save("bad_short.onnx", helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], name="conv")], "g", [x], [y], [short]),
        expect="declares 81 elements")
    # An opset outside 7..18.
    save("bad_opset.onnx", helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"], name="r")], "g", [x], [y]), opset=6,
        expect="opsets 7 to 18")
    # A softmax across the samples of a batch.
    save("bad_softmax.onnx", helper.make_graph(
        [helper.make_node("Softmax", ["x"], ["y"], name="sm", axis=0)], "g", [x], [y]),
        expect="softmax over axis 0")
    # A reference to a value nothing defines.
    save("bad_dangling.onnx", helper.make_graph(
        [helper.make_node("Add", ["x", "ghost"], ["y"], name="add")], "g", [x], [y]),
        expect="ghost")
    with open(os.path.join(out_dir, "bad_models.txt"), "w") as f:
        f.writelines(lines)


def main():
    out_dir = sys.argv[1]
    full = "--full" in sys.argv[2:]
    os.makedirs(out_dir, exist_ok=True)
    # (name, builder, test size, opset, dynamic batch, keep batch norms as nodes)
    models = [
        ("opsnet", OpsNet, 32, 13, True, True),
        ("opsnet_opset14", OpsNet, 32, 14, False, True),  # HardSwish, a fixed batch
        ("squeezenet1_1", torchvision.models.squeezenet1_1, 64, 17, False, False),
        ("resnet18", torchvision.models.resnet18, 64, 11, True, False),
        ("mobilenet_v2", torchvision.models.mobilenet_v2, 64, 13, True, True),
    ]
    if full:
        models.append(("vgg11", torchvision.models.vgg11, 224, 13, True, False))
    manifest = ""
    for name, build, size, opset, dynamic, keep_bn in models:
        torch.manual_seed(1234)
        model = build().eval()
        randomize_batchnorm(model)
        full_size = 224 if full and not name.startswith("opsnet") else size
        manifest += export(name, model, full_size, opset, dynamic, keep_bn, out_dir)
    with open(os.path.join(out_dir, "manifest.txt"), "w") as f:
        f.write(manifest)
    write_bad_models(out_dir)


if __name__ == "__main__":
    main()
