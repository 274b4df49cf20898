#!/usr/bin/env python3
"""Where int8 inference spends its time, by kind of layer: osprey's int8
model (`osprey bench --model X.int8.osp --layers`) beside PyTorch's FX
static int8 of the same torchvision module (torch_peer.py's quantize(),
oneDNN), each layer of the converted FX graph timed as it runs (a
torch.fx.Interpreter that clocks every node; the sum of the nodes is
printed beside the whole forward, so that the interpreter's own cost
shows).

    /usr/bin/python3 bench/onnx/int8_profile.py --net resnet18 --batch 16
        [--threads 2] [--steps N] [--osprey build/osprey] [--models build/bench-onnx] [--raw]

The int8 model must exist (bench/onnx/run makes it: MODELS/NET.int8.osp).
Kinds: the stem (the convolution that reads the image), convolutions by
window and stride, depthwise convolutions, max pooling, residual adds
(osprey fuses them into the convolution before them: its time is in that
row), activations that PyTorch runs apart (osprey fuses them too),
quantise/dequantise steps (PyTorch's between float and int8 parts),
global pooling, the classifier, the rest.
"""
import argparse
import os
import re
import subprocess
import sys
import time

import torch
import torch.fx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_models import build  # noqa: E402
from torch_peer import quantize  # noqa: E402

ROOT = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

KINDS = ["stem", "conv 3x3 s1", "conv 3x3 s2", "conv 1x1 s1", "conv 1x1 s2", "depthwise",
         "max pool", "residual add", "activation", "quantise/dequantise", "global pool",
         "classifier", "other"]


def conv_kind(m):
    """The kind of a Conv2d-like module (float or quantised)."""
    k, s = m.kernel_size[0], m.stride[0]
    if m.in_channels == 3:
        return "stem"
    if m.groups > 1:
        return "depthwise"
    if k in (1, 3):
        return f"conv {k}x{k} s{1 if s == 1 else 2}"
    return "other"


def in_scope(module, layer):
    """Whether osprey layer `layer` (the ONNX node's scopes joined by
    dots, then the operator: "layer2.layer2.0.downsample.downsample.0.Conv")
    is torch module `module` ("layer2.0.downsample.0"): the module's name
    parts in order among the layer's, ending where the layer's do."""
    want, have = module.split("."), layer.split(".")[:-1]
    if not have or have[-1] != want[-1]:
        return False
    i = 0
    for part in have:
        if i < len(want) and part == want[i]:
            i += 1
    return i == len(want)


def osprey_profile(osprey, model, net, batch, threads, steps):
    convs = {name: m for name, m in build(net).named_modules() if isinstance(m, torch.nn.Conv2d)}
    cmd = [osprey, "bench", "--model", model, "--batch", str(batch), "--threads", str(threads),
           "--reps", "1", "--layers"] + (["--steps", str(steps)] if steps else [])
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    kinds = dict.fromkeys(KINDS, 0.0)
    step = None
    table = False
    for line in out.splitlines():
        f = line.split()
        table = table or f[:2] == ["layer", "op"]
        if not table:
            continue
        if line.startswith("step "):
            step = float(f[1])
            continue
        if (len(f) < 5 or f[3] == "-" or not re.match(r"^[0-9.]+$", f[3]) or
                line.startswith(("sum of layers", "other "))):
            continue
        name, op, ms = f[0], f[1], float(f[3])
        if op == "conv":
            match = max((n for n in convs if in_scope(n, name)), key=len, default=None)
            kind = conv_kind(convs[match]) if match else "other"
        else:
            kind = {"maxpool": "max pool", "add": "residual add", "globalavgpool": "global pool",
                    "fc": "classifier"}.get(op, "other")
        kinds[kind] += ms
    return kinds, step, out


class Clock(torch.fx.Interpreter):
    """Runs a GraphModule node by node, adding each node's time to its kind."""

    def __init__(self, gm, kinds):
        super().__init__(gm)
        self.kinds = kinds

    def run_node(self, n):
        t0 = time.perf_counter()
        r = super().run_node(n)
        self.kinds[self.kind(n)] += (time.perf_counter() - t0) * 1e3
        return r

    def kind(self, n):
        if n.op == "call_module":
            m = self.module.get_submodule(n.target)
            if hasattr(m, "kernel_size") and hasattr(m, "groups"):
                return conv_kind(m)
            t = type(m).__name__.lower()
            if t in ("relu", "relu6", "hardtanh"):
                return "activation"
            if "maxpool" in t:
                return "max pool"
            if "adaptiveavgpool" in t:
                return "global pool"
            if "linear" in t:
                return "classifier"
            return "other"
        if n.op in ("call_function", "call_method"):
            t = str(n.target).lower()
            if "quantize_per" in t or "dequantize" in t:
                return "quantise/dequantise"
            if "add" in t:
                return "residual add"
            if "max_pool" in t:
                return "max pool"
            if "adaptive_avg_pool" in t:
                return "global pool"
        return "other"


def torch_profile(net, batch, threads, steps):
    torch.set_num_threads(threads)
    x = torch.randn(batch, 3, 224, 224)
    q = quantize(build(net), x)
    kinds = dict.fromkeys(KINDS, 0.0)
    with torch.inference_mode():
        for _ in range(2):
            q(x)
        t0 = time.perf_counter()
        for _ in range(steps):
            q(x)
        whole = (time.perf_counter() - t0) / steps * 1e3
        clock = Clock(q, kinds)
        clock.run(x)
        for k in kinds:
            kinds[k] = 0.0
        for _ in range(steps):
            clock.run(x)
    for k in kinds:
        kinds[k] /= steps
    return kinds, whole


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--net", required=True)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=0, help="steps timed (default: about 2 s)")
    ap.add_argument("--osprey", default=os.path.join(ROOT, "build", "osprey"))
    ap.add_argument("--models", default=os.path.join(ROOT, "build", "bench-onnx"))
    ap.add_argument("--raw", action="store_true", help="also print osprey's per-layer table")
    a = ap.parse_args()
    model = os.path.join(a.models, f"{a.net}.int8.osp")
    o, ostep, raw = osprey_profile(a.osprey, model, a.net, a.batch, a.threads, a.steps)
    steps = a.steps or max(2, round(2000 / max(ostep, 1)))
    t, twhole = torch_profile(a.net, a.batch, a.threads, steps)
    if a.raw:
        print(raw)
    print(f"{a.net}, batch {a.batch}, {a.threads} threads: ms per step by kind of layer")
    print(f"{'kind':22} {'osprey int8':>12} {'PyTorch int8':>13} {'osprey/PT':>10}")
    for k in KINDS:
        if o[k] == 0 and t[k] < 0.005:
            continue
        r = f"{o[k] / t[k]:10.2f}" if t[k] >= 0.005 else f"{'-':>10}"
        print(f"{k:22} {o[k]:12.2f} {t[k]:13.2f} {r}")
    print(f"{'sum of layers':22} {sum(o.values()):12.2f} {sum(t.values()):13.2f}")
    print(f"{'whole step':22} {ostep:12.2f} {twhole:13.2f} {ostep / twhole:10.2f}")


if __name__ == "__main__":
    sys.exit(main())
