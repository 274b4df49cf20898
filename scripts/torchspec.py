"""Builds a PyTorch module from an osprey network spec (docs/netspec.md), with
the same layer names, so that osprey and PyTorch run the same network with the
same weights: the golden tests compare them, the benchmarks race them.

Every layer type of docs/netspec.md is mapped. A [constant] is a submodule
holding the buffer `value`, so its state-dict key is `<name>.value` as in
osprey."""
import re

import torch
import torch.nn as nn
import torch.nn.functional as F

# osprey's parameter-free element-wise layers and PyTorch's functions.
UNARY = {"exp": torch.exp, "log": torch.log, "sqrt": torch.sqrt, "abs": torch.abs,
         "neg": torch.neg, "reciprocal": torch.reciprocal, "softplus": F.softplus,
         "softsign": F.softsign}


def parse_spec(text):
    """[(type, {key: value}, line)] in file order."""
    sections = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = re.split(r"[#;]", raw, maxsplit=1)[0].strip()
        if not line:
            continue
        if line.startswith("["):
            sections.append((line[1:-1].strip(), {}, lineno))
        else:
            key, value = (s.strip() for s in line.split("=", 1))
            sections[-1][1][key] = value
    return sections


def ints(value):
    return [int(v) for v in re.split(r"[,x]", value)]


def pair(value, default):
    if value is None:
        return (default, default)
    v = ints(value)
    return (v[0], v[0]) if len(v) == 1 else (v[0], v[1])


PAD_MODES = {"constant": "constant", "reflect": "reflect", "edge": "replicate"}


def pads(value):
    """[pad]'s `pad` as (top, left, bottom, right)."""
    v = ints(value)
    if len(v) == 1:
        return (v[0],) * 4
    if len(v) == 2:
        return (v[0], v[1], v[0], v[1])
    return tuple(v)


def aligned(xs):
    """Broadcasting is over the per-sample shapes (the batch axis stays first):
    pads each tensor's per-sample shape with leading 1s to the longest one."""
    rank = max(x.dim() for x in xs)
    return [x.reshape([x.shape[0]] + [1] * (rank - x.dim()) + list(x.shape[1:])) for x in xs]


class Constant(nn.Module):
    """[constant]: the buffer `value`, the same for every sample."""

    def __init__(self, shape):
        super().__init__()
        self.register_buffer("value", torch.zeros(shape))

    def forward(self, n):
        return self.value.expand([n] + list(self.value.shape))


class SpecNet(nn.Module):
    def __init__(self, text):
        super().__init__()
        sections = parse_spec(text)
        net = sections[0][1]
        self.input_shape = ints(net["input"])
        self.plan = []  # (name, type, input names)
        shapes = {"input": list(self.input_shape)}
        prev = "input"
        for i, (kind, kv, _) in enumerate(sections[1:], start=1):
            name = kv.get("name", f"{kind}{i}")
            if kind == "constant":
                inputs = []
            else:
                inputs = [s.strip() for s in kv["input"].split(",")] if "input" in kv else [prev]
            shape = shapes[inputs[0]] if inputs else None
            if kind == "conv":
                kh, kw = pair(kv["size"], 1)
                pad = kv.get("pad", "0")
                if pad == "same":
                    d = pair(kv.get("dilation"), 1)
                    pad = f"{d[0] * (kh - 1) // 2}x{d[1] * (kw - 1) // 2}"
                m = nn.Conv2d(shape[0], int(kv["filters"]), (kh, kw), stride=pair(kv.get("stride"), 1),
                              padding=pair(pad, 0), dilation=pair(kv.get("dilation"), 1),
                              groups=int(kv.get("groups", 1)), bias=kv.get("bias", "1") != "0")
                setattr(self, name, m)
            elif kind == "batchnorm":
                cls = nn.BatchNorm2d if len(shape) == 3 else nn.BatchNorm1d
                setattr(self, name, cls(shape[0], eps=float(kv.get("eps", 1e-5)),
                                        momentum=float(kv.get("momentum", 0.1))))
            elif kind == "fc" and kv.get("last_axis", "0") == "1":
                setattr(self, name, nn.Linear(shape[-1], int(kv["outputs"]), bias=kv.get("bias", "1") != "0"))
            elif kind == "layernorm":
                axis = int(kv.get("axis", -1))
                setattr(self, name, nn.LayerNorm(shape[axis:], eps=float(kv.get("eps", 1e-5)),
                                                 elementwise_affine=kv.get("affine", "1") != "0"))
            elif kind == "fc":
                n_in = 1
                for d in shape:
                    n_in *= d
                setattr(self, name, nn.Linear(n_in, int(kv["outputs"]), bias=kv.get("bias", "1") != "0"))
            elif kind in ("maxpool", "avgpool"):
                k = pair(kv["size"], 1)
                s = pair(kv.get("stride"), 0) if "stride" in kv else k
                p = pair(kv.get("pad"), 0)
                if kind == "maxpool":
                    m = nn.MaxPool2d(k, s, p, ceil_mode=kv.get("ceil", "0") == "1")
                else:
                    m = nn.AvgPool2d(k, s, p, ceil_mode=kv.get("ceil", "0") == "1",
                                     count_include_pad=kv.get("exclude_pad", "0") == "0")
                setattr(self, name, m)
            elif kind == "deconv":
                top, left, bottom, right = pads(kv.get("pad", "0"))
                if (top, left) != (bottom, right):
                    raise ValueError(f"[deconv] {name}: PyTorch pads both sides alike")
                kh, kw = pair(kv["size"], 1)
                m = nn.ConvTranspose2d(shape[0], int(kv["filters"]), (kh, kw),
                                       stride=pair(kv.get("stride"), 1), padding=(top, left),
                                       output_padding=pair(kv.get("output_padding"), 0),
                                       groups=int(kv.get("groups", 1)), bias=kv.get("bias", "1") != "0",
                                       dilation=pair(kv.get("dilation"), 1))
                setattr(self, name, m)
            elif kind == "groupnorm":
                setattr(self, name, nn.GroupNorm(int(kv["groups"]), shape[0], eps=float(kv.get("eps", 1e-5))))
            elif kind == "dropout":
                setattr(self, name, nn.Dropout(float(kv.get("p", 0.5))))
            elif kind == "constant":
                setattr(self, name, Constant(ints(kv["shape"])))
            self.plan.append((name, kind, inputs, kv))
            with torch.no_grad():
                shapes[name] = list(self._layer(name, kind, kv,
                                                [torch.zeros([2] + shapes[n]) for n in inputs], 2).shape[1:])
            prev = name
        self.output_name = prev

    def _layer(self, name, kind, kv, xs, n):
        if kind == "constant":
            return getattr(self, name)(n)
        x = xs[0]
        if kind in ("conv", "batchnorm", "maxpool", "avgpool", "dropout", "deconv", "groupnorm",
                    "layernorm"):
            return getattr(self, name)(x)
        if kind == "fc" and kv.get("last_axis", "0") == "1":
            return getattr(self, name)(x)
        if kind == "gelu":
            return F.gelu(x, approximate=kv.get("approximate", "none"))
        if kind == "erf":
            return torch.erf(x)
        if kind in UNARY:
            return UNARY[kind](x)
        if kind == "matmul":
            return torch.matmul(*aligned(xs))
        if kind == "attention":
            q, k, v = xs
            kt = k if kv.get("transposed_k", "0") == "1" else k.transpose(-2, -1)
            scale = float(kv["scale"]) if "scale" in kv else q.shape[-1] ** -0.5
            return torch.softmax(q @ kt * scale, dim=-1) @ v
        if kind == "fc":
            return getattr(self, name)(x.flatten(1))
        if kind == "relu":
            return F.relu(x)
        if kind == "leakyrelu":
            return F.leaky_relu(x, float(kv.get("alpha", 0.01)))
        if kind == "relu6":
            return F.relu6(x)
        if kind == "sigmoid":
            return torch.sigmoid(x)
        if kind == "tanh":
            return torch.tanh(x)
        if kind == "swish":
            return x * torch.sigmoid(x)
        if kind == "globalavgpool":
            return F.adaptive_avg_pool2d(x, 1)
        if kind in ("add", "mul", "sub", "div") and len(xs) == 2:
            xs = aligned(xs)
        if kind == "add":
            out = xs[0]
            for y in xs[1:]:
                out = out + y
            return out
        if kind == "concat":
            return torch.cat(xs, dim=1)
        if kind == "flatten":
            return x.flatten(1)
        if kind == "reshape":
            return x.reshape([x.shape[0]] + ints(kv["shape"]))
        if kind == "hardsigmoid":
            alpha, beta = float(kv.get("alpha", 1 / 6)), float(kv.get("beta", 0.5))
            if "alpha" not in kv and "beta" not in kv:
                return F.hardsigmoid(x)
            # hardtanh's gradient is 0 at the bounds, as hardsigmoid's is
            return F.hardtanh(alpha * x + beta, 0.0, 1.0)
        if kind == "hardswish":
            return F.hardswish(x)
        if kind == "clip":
            lo, hi = (float(kv[k]) if k in kv else None for k in ("min", "max"))
            return torch.clamp(x, lo, hi)
        if kind == "mul":
            return xs[0] * xs[1]
        if kind == "sub":
            return xs[0] - xs[1]
        if kind == "div":
            return xs[0] / xs[1]
        if kind == "pad":
            top, left, bottom, right = pads(kv["pad"])
            mode = kv.get("mode", "constant")
            if mode == "constant":
                return F.pad(x, (left, right, top, bottom), value=float(kv.get("value", 0)))
            return F.pad(x, (left, right, top, bottom), mode=PAD_MODES[mode])
        if kind == "transpose":
            return x.permute([0] + [p + 1 for p in ints(kv["perm"])])
        if kind == "softmax":
            fn = F.log_softmax if kv.get("log", "0") == "1" else F.softmax
            if "axis" in kv:
                axis = int(kv["axis"])
                return fn(x, dim=axis + 1 if axis >= 0 else axis)
            return fn(x.flatten(1), dim=1).view_as(x)
        if kind == "l2norm":
            return F.normalize(x.flatten(1), dim=1, eps=float(kv.get("eps", 1e-12))).view_as(x)
        raise ValueError(f"layer type [{kind}] is not mapped to PyTorch")

    def forward(self, x, keep=None):
        values = {"input": x}
        for name, kind, inputs, kv in self.plan:
            values[name] = self._layer(name, kind, kv, [values[n] for n in inputs], x.shape[0])
        return values if keep else values[self.output_name]


def save_safetensors(path, tensors, metadata=None):
    """Writes {name: tensor} as safetensors (F32, I32, I64) with the standard library."""
    import json
    import struct

    dtypes = {torch.float32: "F32", torch.int32: "I32", torch.int64: "I64"}
    header, blobs, offset = {}, [], 0
    for name, t in tensors.items():
        t = t.detach().contiguous().cpu()
        data = t.numpy().tobytes()
        header[name] = {"dtype": dtypes[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    if metadata:
        header["__metadata__"] = metadata
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def golden(text, batch=3, seed=1):
    """A network's reference values: {name: tensor} with input, the output,
    and the gradients of L = sum(output * r) (r random) with respect to the
    input ("grad/input") and each parameter ("grad/P"); every state-dict entry
    is "param/P". PyTorch's initialisation, then non-trivial buffers:
    [constant]s +-U(0.5, 1.5) (away from 0, so they can divide), batch-norm
    statistics and affine parameters near their starting values. In training
    mode ([dropout]'s masks are osprey's own: leave it out)."""
    torch.manual_seed(seed)
    net = SpecNet(text).train()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, Constant):
                v = m.value
                v.copy_((0.5 + torch.rand(v.shape)) * torch.where(torch.rand(v.shape) < 0.5, -1.0, 1.0))
            elif isinstance(m, nn.GroupNorm):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
            elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.8, 1.2)
    state = {k: v.clone() for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    x = torch.randn([batch] + net.input_shape, requires_grad=True)
    y = net(x)
    r = torch.randn(y.shape)
    (y * r).sum().backward()
    tensors = {"input": x, "output": y, "r": r, "grad/input": x.grad}
    for k, v in state.items():
        tensors[f"param/{k}"] = v
    for k, p in net.named_parameters():
        tensors[f"grad/{k}"] = p.grad
    return tensors


if __name__ == "__main__":
    import sys

    if len(sys.argv) not in (4, 5) or sys.argv[1] != "golden":
        sys.exit("usage: torchspec.py golden SPEC OUT.safetensors [BATCH]")
    torch.set_num_threads(1)
    spec = open(sys.argv[2]).read()
    save_safetensors(sys.argv[3], golden(spec, int(sys.argv[4]) if len(sys.argv) == 5 else 3))
