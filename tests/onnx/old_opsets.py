#!/usr/bin/env python3
"""ONNX models at opsets 7 to 18 with PyTorch's outputs, for
tests/io/test_onnx_opsets.c.

Small CNNs (random weights, fixed seeds) are exported by PyTorch at opsets
7, 8, 9, 10, 11 and 13, converted down to 7, 8, 9 and 10 with
onnx.version_converter from 11 and 10 where it can, and written at 18 by rewriting the opset-17 export with
onnx.helper (ReduceMean's axes and Pad's axes as inputs, Split with
num_outputs, Resize with axes; onnx 1.12's checker does not know 18, so it
is not run on those). Each model's input and PyTorch's output are written
as .npy; manifest.txt lists "model input output" per line, and skipped.txt
the conversions the converter refused.

    python3 tests/onnx/old_opsets.py OUT_DIR
"""
import os
import sys
import tempfile

import numpy as np
import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F
from onnx import helper, numpy_helper, version_converter


class ConvNet(nn.Module):
    """Conv, BatchNormalization, Relu, Clip, MaxPool, AveragePool, Pad,
    Flatten, Gemm, Softmax, Dropout, Concat, ReduceMean-free head."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, stride=2)
        self.bn2 = nn.BatchNorm2d(8)
        self.conv3 = nn.Conv2d(16, 6, 1)
        self.fc = nn.Linear(6 * 4 * 4, 10)
        self.drop = nn.Dropout(0.3)

    def forward(self, x):
        x = F.relu(self.bn1(self.conv1(x)))
        x = F.max_pool2d(x, 2)
        y = F.pad(x, (1, 0, 1, 0))                 # Pad, constant
        y = F.relu6(self.bn2(self.conv2(y)))       # Clip (0, 6)
        x = F.avg_pool2d(x, 2)
        x = torch.cat([x, y], 1)
        x = torch.clamp(self.conv3(x), -0.5, 0.75)  # Clip with other bounds
        x = self.drop(torch.flatten(x, 1))
        return F.softmax(self.fc(x), dim=1)


class UpNet(nn.Module):
    """Resize (Upsample before 10) in each of PyTorch's forms, and a
    ReduceMean over the spatial axes."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, stride=2)
        self.conv3 = nn.Conv2d(4, 5, 3)
        self.fc = nn.Linear(5, 7)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        x = F.relu(self.conv2(x))
        x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        x = torch.tanh(self.conv3(x))
        x = x.mean((2, 3))
        return self.fc(x)


class NearestNet(nn.Module):
    """Nearest enlarging by 2 and 3, which Upsample and Resize compute as
    PyTorch does at every opset (bilinear before 11 does not match)."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, stride=2)
        self.fc = nn.Linear(4, 5)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        x = F.relu(self.conv2(x))
        x = F.interpolate(x, scale_factor=(3.0, 2.0), mode="nearest")
        return self.fc(x.mean((2, 3)))


class AlignNet(nn.Module):
    """Bilinear with align_corners and a target size; nearest shrinking."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 3, 3, padding=1)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.interpolate(x, size=(23, 29), mode="bilinear", align_corners=True)
        x = torch.sigmoid(self.conv2(x))
        return F.interpolate(x, scale_factor=0.5, mode="nearest")


class FracNet(nn.Module):
    """Fractional factors: nearest by 1.5, bilinear by 0.75 x 1.25."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.conv3 = nn.Conv2d(4, 2, 3)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.interpolate(x, scale_factor=1.5, mode="nearest")
        x = F.relu(self.conv2(x))
        x = F.interpolate(x, scale_factor=(0.75, 1.25), mode="bilinear", align_corners=False)
        return self.conv3(x)


def randomise(model, seed):
    torch.manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    return model.eval()


def export(model, x, opset):
    fd, path = tempfile.mkstemp(suffix=".onnx")
    os.close(fd)
    # Old opsets want batch norms as nodes (training=TrainingMode.PRESERVE
    # would keep them; eval folds none at these versions either way).
    torch.onnx.export(model, x, path, opset_version=opset, input_names=["input"],
                      output_names=["output"], do_constant_folding=True)
    m = onnx.load(path)
    os.remove(path)
    return m


def opset_of(m):
    return [o.version for o in m.opset_import if o.domain in ("", "ai.onnx")][0]


def const_input(graph, name, array):
    graph.initializer.append(numpy_helper.from_array(np.asarray(array), name))
    return name


def constant_of(graph, name):
    """The value of name when an initializer or a Constant node holds it."""
    for i in graph.initializer:
        if i.name == name:
            return numpy_helper.to_array(i)
    for n in graph.node:
        if n.op_type == "Constant" and list(n.output) == [name]:
            for a in n.attribute:
                if a.name == "value":
                    return numpy_helper.to_array(a.t)
    return None


def to_opset18(m):
    """An opset-17 model rewritten in opset 18's forms: the reductions'
    axes as an input, Pad's pads over H and W with the axes input, and
    Resize's scales over H and W with the axes attribute."""
    m = onnx.ModelProto.FromString(m.SerializeToString())
    g = m.graph
    rewritten = {"ReduceMean": 0, "Pad": 0, "Resize": 0}
    for k, n in enumerate(g.node):
        attrs = {a.name: a for a in n.attribute}
        if n.op_type.startswith("Reduce") and n.op_type != "ReduceSum" and "axes" in attrs:
            axes = list(attrs["axes"].ints)
            n.attribute.remove(attrs["axes"])
            n.input.append(const_input(g, "%s_axes18_%d" % (n.op_type, k), np.array(axes, np.int64)))
            rewritten["ReduceMean"] += 1
        if n.op_type == "Pad" and len(n.input) >= 2:
            p = constant_of(g, n.input[1])
            if p is not None and p.size == 8 and not p[[0, 1, 4, 5]].any():
                while len(n.input) < 3:
                    n.input.append("")
                n.input[1] = const_input(g, "pad_hw18_%d" % k, p[[2, 3, 6, 7]].astype(np.int64))
                n.input.append(const_input(g, "pad_axes18_%d" % k, np.array([2, 3], np.int64)))
                rewritten["Pad"] += 1
        if n.op_type == "Resize" and len(n.input) >= 3 and n.input[2]:
            sc = constant_of(g, n.input[2])
            if sc is not None and sc.size == 4:
                n.input[2] = const_input(g, "resize_hw18_%d" % k, sc[2:].astype(np.float32))
                n.attribute.append(helper.make_attribute("axes", [2, 3]))
                rewritten["Resize"] += 1
    for o in m.opset_import:
        if o.domain in ("", "ai.onnx"):
            o.version = 18
    return m, rewritten


def split_model_18():
    """Split with num_outputs (18) on constants: its parts feed a
    Reshape's target shape, so the network runs only if they fold."""
    x = helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, [2, 4, 6, 6])
    y = helper.make_tensor_value_info("output", onnx.TensorProto.FLOAT, [2, 144])
    dims = numpy_helper.from_array(np.array([-1, 144, 7, 9], np.int64), "dims")
    nodes = [
        helper.make_node("Split", ["dims"], ["a", "b"], name="split", axis=0, num_outputs=2),
        helper.make_node("Relu", ["input"], ["r"], name="relu"),
        helper.make_node("Reshape", ["r", "a"], ["output"], name="flat"),
    ]
    g = helper.make_graph(nodes, "split18", [x], [y], [dims])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else "opsets_golden"
    os.makedirs(out_dir, exist_ok=True)
    torch.set_num_threads(1)
    manifest, skipped, forms18 = [], [], []

    def save(m, name, x, want):
        onnx.save(m, os.path.join(out_dir, name + ".onnx"))
        np.save(os.path.join(out_dir, name + ".input.npy"), x.numpy())
        np.save(os.path.join(out_dir, name + ".output.npy"), want)
        manifest.append("%s.onnx %s.input.npy %s.output.npy" % (name, name, name))

    for name, build, seed, size, old in [("convnet", ConvNet, 1, 16, True),
                                         ("nearestnet", NearestNet, 4, 8, True),
                                         ("upnet", UpNet, 2, 12, False),
                                         ("alignnet", AlignNet, 3, 10, False),
                                         ("fracnet", FracNet, 5, 11, False)]:
        model = randomise(build(), seed)
        torch.manual_seed(seed + 100)
        x = torch.randn(2, 3, size, size)
        with torch.no_grad():
            want = model(x).numpy()
        for base in (11, 13):
            save(export(model, x, base), "%s_op%d" % (name, base), x, want)
        # 7 to 10: PyTorch's own export at each, and onnx.version_converter
        # from 11, 10 and 9 where it has the adapters. (Bilinear resizing
        # before 11 is not PyTorch's: those models start at 11.)
        sources = {11: export(model, x, 11)}
        for target in ((10, 9, 8, 7) if old else ()):
            try:
                m = export(model, x, target)
            except Exception as e:  # PyTorch's exporter lacks the operator there
                skipped.append("%s torch at %d: %s" % (name, target, str(e).splitlines()[0][:90]))
            else:
                save(m, "%s_op%d" % (name, target), x, want)
                sources[target] = m
            for base, src in sorted(sources.items()):
                if base <= target:
                    continue
                try:
                    c = version_converter.convert_version(src, target)
                    onnx.checker.check_model(c)
                except Exception as e:  # the converter lacks an adapter
                    skipped.append("%s %d->%d: %s" % (name, base, target,
                                                      str(e).splitlines()[0][-50:]))
                    continue
                save(c, "%s_op%d_from%d" % (name, target, base), x, want)
        m18, rewritten = to_opset18(export(model, x, 17))
        save(m18, "%s_op18" % name, x, want)
        forms18.append("%s: %s" % (name, ", ".join("%s %d" % kv for kv in rewritten.items())))

    x = torch.randn(2, 4, 6, 6)
    save(split_model_18(), "split_op18", x, torch.relu(x).reshape(2, 144).numpy())

    with open(os.path.join(out_dir, "manifest.txt"), "w") as f:
        f.write("\n".join(manifest) + "\n")
    with open(os.path.join(out_dir, "skipped.txt"), "w") as f:
        f.write("\n".join(skipped) + ("\n" if skipped else ""))
    print("%d models, %d conversions skipped" % (len(manifest), len(skipped)))
    print("opset 18 forms written:", "; ".join(forms18))
    for s in skipped:
        print("  skipped:", s)


if __name__ == "__main__":
    main()
