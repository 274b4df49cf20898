"""Golden data for ONNX's ConvTranspose, InstanceNormalization and
GroupNormalization: a network of transposed convolutions (stride 2 with
output_padding 1, groups, dilation, padding) and group / instance norms
exported by PyTorch at opsets 9, 11, 13 and 17 (nn.GroupNorm as PyTorch's
Reshape / InstanceNormalization / Reshape / Mul / Add chain), models written
node by node (GroupNormalization of opset 18, a chain that must not fold,
ConvTranspose's auto_pad and output_shape forms), and the ConvTranspose and
InstanceNormalization cases of ONNX's own test data where it is installed.
Reference outputs come from PyTorch (or, for ONNX's cases, their own files).

    /usr/bin/python3 tests/golden/make_cnnops_golden.py OUT_DIR

writes OUT_DIR/M.onnx, M.input.npy, M.output.npy for each model M, and
OUT_DIR/manifest.txt with one line per model, "M LAYERS": the layer types
`osprey info` must list for it, in order ('-' when not checked). Models the
importer must refuse are bad_<what>.onnx, listed in bad_models.txt as
"FILE MESSAGE-FRAGMENT"."""
import glob
import os
import sys

import numpy as np
import onnx
import torch
import torch.nn as nn
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper

torch.set_num_threads(1)
CONFORMANCE = "/usr/share/libonnx-testdata/data"


class DeconvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.up1 = nn.ConvTranspose2d(8, 8, 3, stride=2, padding=1, output_padding=1)
        self.gn = nn.GroupNorm(4, 8)
        self.up2 = nn.ConvTranspose2d(8, 6, 3, padding=2, dilation=2, groups=2)
        self.inorm = nn.InstanceNorm2d(6, affine=True, eps=1e-3)
        self.up3 = nn.ConvTranspose2d(6, 4, (2, 3), stride=(2, 1), bias=False)
        self.gn2 = nn.GroupNorm(2, 4)

    def forward(self, x):
        x = torch.relu(self.conv(x))
        x = torch.tanh(self.gn(self.up1(x)))
        x = self.inorm(self.up2(x))
        return self.gn2(self.up3(x))


def randomize_norms(model):
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.GroupNorm, nn.InstanceNorm2d)):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.3, 0.3)


def save_case(out_dir, name, model_proto, x, y):
    onnx.save(model_proto, os.path.join(out_dir, f"{name}.onnx"))
    np.save(os.path.join(out_dir, f"{name}.input.npy"), np.ascontiguousarray(x, dtype=np.float32))
    np.save(os.path.join(out_dir, f"{name}.output.npy"), np.ascontiguousarray(y, dtype=np.float32))


def torch_models(out_dir):
    lines = []
    want = "conv relu deconv groupnorm tanh deconv groupnorm deconv groupnorm"
    for opset, dynamic in ((9, False), (11, False), (13, True), (17, True)):
        torch.manual_seed(5)
        model = DeconvNet().eval()
        randomize_norms(model)
        x = torch.randn(2, 3, 6, 5)
        path = os.path.join(out_dir, f"deconvnet{opset}.onnx")
        torch.onnx.export(model, x, path, opset_version=opset, input_names=["input"],
                          output_names=["output"],
                          dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}} if dynamic else None)
        with torch.no_grad():
            y = model(x)
        save_case(out_dir, f"deconvnet{opset}", onnx.load(path), x.numpy(), y.numpy())
        lines.append(f"deconvnet{opset} {want.replace(' ', ',')}\n")
    return lines


def graph_model(nodes, x_shape, y_shape, inits, opset=13):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, y_shape)
    g = helper.make_graph(nodes, "g", [x], [y], [numpy_helper.from_array(v, k) for k, v in inits.items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def hand_models(out_dir):
    lines = []
    rng = np.random.RandomState(3)
    # GroupNormalization of opset 18: scale and bias per group.
    x = rng.randn(2, 8, 5, 4).astype(np.float32)
    scale, bias = rng.uniform(0.5, 1.5, 4).astype(np.float32), rng.uniform(-0.3, 0.3, 4).astype(np.float32)
    m = graph_model([helper.make_node("GroupNormalization", ["x", "s", "b"], ["h"], name="gn",
                                      num_groups=4, epsilon=1e-3),
                     helper.make_node("Relu", ["h"], ["y"], name="r")],
                    ["N", 8, 5, 4], ["N", 8, 5, 4], {"s": scale, "b": bias}, opset=18)
    y = F.relu(F.group_norm(torch.from_numpy(x), 4, torch.from_numpy(scale).repeat_interleave(2),
                            torch.from_numpy(bias).repeat_interleave(2), eps=1e-3))
    save_case(out_dir, "groupnorm18", m, x, y.numpy())
    lines.append("groupnorm18 groupnorm,relu\n")
    # PyTorch's chain with a scale of 2 in the InstanceNormalization: not a
    # plain group norm, so its pieces map one by one.
    x = rng.randn(2, 6, 3, 3).astype(np.float32)
    w, b = rng.uniform(0.5, 1.5, (6, 1, 1)).astype(np.float32), rng.uniform(-1, 1, (6, 1, 1)).astype(np.float32)
    m = graph_model([
        helper.make_node("Relu", ["x"], ["a"], name="first"),
        helper.make_node("Reshape", ["a", "g"], ["r1"], name="r1"),
        helper.make_node("InstanceNormalization", ["r1", "two", "zero"], ["n"], name="in"),
        helper.make_node("Reshape", ["n", "back"], ["r2"], name="r2"),
        helper.make_node("Mul", ["r2", "w"], ["m"], name="mul"),
        helper.make_node("Add", ["m", "b"], ["y"], name="add")],
        ["N", 6, 3, 3], ["N", 6, 3, 3],
        {"g": np.array([0, 3, -1], np.int64), "two": np.full(3, 2, np.float32),
         "zero": np.zeros(3, np.float32), "back": np.array([0, 6, 3, 3], np.int64), "w": w, "b": b})
    t = F.group_norm(torch.relu(torch.from_numpy(x)), 3, eps=1e-5) * 2
    save_case(out_dir, "chain_scaled", m, x, (t.numpy() * w + b))
    lines.append("chain_scaled relu,reshape,groupnorm,reshape,constant,mul,constant,add\n")
    # The same chain exactly: folds into one layer.
    m.graph.initializer[1].CopyFrom(numpy_helper.from_array(np.ones(3, np.float32), "two"))
    t = F.group_norm(torch.relu(torch.from_numpy(x)), 3, eps=1e-5)
    save_case(out_dir, "chain_plain", m, x, (t.numpy() * w + b))
    lines.append("chain_plain relu,groupnorm\n")
    # The same chain with its reshaped-back value read twice: folding would
    # hand the second reader the scaled values, so it must not fold.
    m.graph.node[-1].output[0] = "sum"
    m.graph.node.extend([helper.make_node("Relu", ["r2"], ["r2relu"], name="again"),
                         helper.make_node("Add", ["sum", "r2relu"], ["y"], name="both")])
    save_case(out_dir, "chain_shared", m, x, t.numpy() * w + b + np.maximum(t.numpy(), 0))
    lines.append("chain_shared -\n")
    # ConvTranspose's other forms: auto_pad, output_shape (longer and
    # shorter than the windows cover), lopsided pads, per PyTorch.
    x = rng.randn(2, 4, 5, 3).astype(np.float32)
    wt = (rng.randn(4, 3, 3, 2) * 0.3).astype(np.float32)
    full = F.conv_transpose2d(torch.from_numpy(x), torch.from_numpy(wt), stride=2)  # 11 x 6
    cases = [  # ONNX's split of the total padding: SAME_UPPER pads more at the end
        ("deconv_same_upper", dict(auto_pad="SAME_UPPER", strides=[2, 2]), full[:, :, 0:10, :]),
        ("deconv_same_lower", dict(auto_pad="SAME_LOWER", strides=[2, 2]), full[:, :, 1:11, :]),
        ("deconv_pads", dict(pads=[0, 1, 2, 0], strides=[2, 2]), full[:, :, 0:9, 1:6]),
        # one row and one column more than the windows reach: zeros
        ("deconv_output_shape", dict(output_shape=[12, 7], strides=[2, 2]), F.pad(full, (0, 1, 0, 1))),
    ]
    for name, attrs, want in cases:
        m = graph_model([helper.make_node("ConvTranspose", ["x", "w"], ["y"], name="up", **attrs)],
                        ["N", 4, 5, 3], ["N", 3, int(want.shape[2]), int(want.shape[3])], {"w": wt})
        save_case(out_dir, name, m, x, want.numpy())
        lines.append(f"{name} deconv\n")
    return lines


def conformance_cases(out_dir):
    """ONNX's own ConvTranspose / InstanceNormalization cases with their
    weights (graph inputs there) made initializers; opset 6 (below osprey's
    7) raised to 7, whose ConvTranspose and InstanceNormalization compute
    the same."""
    lines = []
    dirs = []
    for pattern in ("node/test_convtranspose*", "node/test_instancenorm*",
                    "pytorch-converted/test_ConvTranspose2d*", "pytorch-operator/test_operator_convtranspose"):
        dirs += sorted(glob.glob(os.path.join(CONFORMANCE, pattern)))
    for d in dirs:
        name = "onnx_" + os.path.basename(d)
        m = onnx.load(os.path.join(d, "model.onnx"))
        data = sorted(glob.glob(os.path.join(d, "test_data_set_0", "input_*.pb")))
        tensors = []
        for p in data:
            t = TensorProto()
            with open(p, "rb") as f:
                t.ParseFromString(f.read())
            tensors.append(numpy_helper.to_array(t))
        out = TensorProto()
        with open(os.path.join(d, "test_data_set_0", "output_0.pb"), "rb") as f:
            out.ParseFromString(f.read())
        inputs = [i for i in m.graph.input if i.name not in {t.name for t in m.graph.initializer}]
        for i, arr in zip(inputs[1:], tensors[1:]):
            m.graph.initializer.append(numpy_helper.from_array(arr, i.name))
        del m.graph.input[1:]
        m.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "N"
        m.graph.output[0].type.tensor_type.shape.dim[0].dim_param = "N"
        for o in m.opset_import:
            if o.domain in ("", "ai.onnx"):
                o.version = max(o.version, 7)
        if tensors[0].ndim != 4:
            onnx.save(m, os.path.join(out_dir, f"bad_{name}.onnx"))
            # refused where the input is read (N-D inputs) or by the mapping
            lines.append((f"bad_{name}.onnx", "2-D\\|has rank"))
            continue
        save_case(out_dir, name, m, tensors[0], numpy_helper.to_array(out))
        lines.append(name)
    return lines


def bad_models(out_dir):
    lines = []

    def save(name, nodes, inits, expect, opset=13, shape=("N", 4, 5, 5)):
        onnx.save(graph_model(nodes, list(shape), ["N", 4, 5, 5], inits, opset), os.path.join(out_dir, name))
        lines.append((name, expect))

    w = np.ones((4, 2, 3, 3), np.float32)
    save("bad_deconv_channels.onnx", [helper.make_node("ConvTranspose", ["x", "w"], ["y"], name="up")],
         {"w": np.ones((3, 2, 3, 3), np.float32)}, "do not fit 4 input channels")
    save("bad_deconv_kernel_shape.onnx",
         [helper.make_node("ConvTranspose", ["x", "w"], ["y"], name="up", kernel_shape=[2, 2])],
         {"w": w}, "kernel_shape does not match")
    save("bad_deconv_stride.onnx",
         [helper.make_node("ConvTranspose", ["x", "w"], ["y"], name="up", strides=[0, 1])],
         {"w": w}, "stride 0")
    save("bad_deconv_output_shape.onnx",
         [helper.make_node("ConvTranspose", ["x", "w"], ["y"], name="up", output_shape=[9, 9])],
         {"w": w}, "before the first window")
    save("bad_deconv_bias.onnx", [helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], name="up")],
         {"w": w, "b": np.ones(3, np.float32)}, "bias of 3 values for 2 output channels")
    save("bad_deconv_auto_pad.onnx",
         [helper.make_node("ConvTranspose", ["x", "w"], ["y"], name="up", auto_pad="SAME_MIDDLE")],
         {"w": w}, "auto_pad 'SAME_MIDDLE'")
    save("bad_instancenorm_scale.onnx",
         [helper.make_node("InstanceNormalization", ["x", "s", "b"], ["y"], name="in")],
         {"s": np.ones(3, np.float32), "b": np.ones(4, np.float32)}, "scale of 3 and bias of 4 values")
    save("bad_instancenorm_eps.onnx",
         [helper.make_node("InstanceNormalization", ["x", "s", "b"], ["y"], name="in", epsilon=-1.0)],
         {"s": np.ones(4, np.float32), "b": np.ones(4, np.float32)}, "epsilon -1")
    save("bad_groupnorm_groups.onnx",
         [helper.make_node("GroupNormalization", ["x", "s", "b"], ["y"], name="gn", num_groups=3)],
         {"s": np.ones(3, np.float32), "b": np.ones(3, np.float32)}, "3 groups do not divide 4 channels",
         opset=18)
    save("bad_groupnorm_opset.onnx",
         [helper.make_node("GroupNormalization", ["x", "s", "b"], ["y"], name="gn", num_groups=2)],
         {"s": np.ones(2, np.float32), "b": np.ones(2, np.float32)}, "defined from opset 18", opset=17)
    save("bad_groupnorm_per_channel.onnx",
         [helper.make_node("GroupNormalization", ["x", "s", "b"], ["y"], name="gn", num_groups=2)],
         {"s": np.ones(4, np.float32), "b": np.ones(4, np.float32)}, "one per group", opset=18)
    return lines


def main():
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    manifest = torch_models(out_dir) + hand_models(out_dir)
    bad = bad_models(out_dir)
    if os.path.isdir(CONFORMANCE):
        for entry in conformance_cases(out_dir):
            if isinstance(entry, tuple):
                bad.append(entry)
            else:
                manifest.append(f"{entry} -\n")
    with open(os.path.join(out_dir, "manifest.txt"), "w") as f:
        f.writelines(manifest)
    with open(os.path.join(out_dir, "bad_models.txt"), "w") as f:
        f.writelines(f"{name} {expect}\n" for name, expect in bad)


if __name__ == "__main__":
    main()
