"""Golden data for tests/nn/test_golden.c: PyTorch's forward outputs, loss and
every parameter's gradient for osprey's example networks, with fixed weights
and inputs. Run by CTest before the golden test:

    /usr/bin/python3 tests/golden/make_golden.py OUT_DIR

writes OUT_DIR/<net>.safetensors holding input, labels, logits, loss, and for
each parameter P: "param/P" and "grad/P" (buffers: "param/P" only, the values
before the step), plus "after/P" for batch-norm running statistics after the
training-mode forward."""
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "scripts"))
from torchspec import SpecNet, save_safetensors  # noqa: E402

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")
NETS = {"lenet": 8, "resnet20": 8}


def golden(name, batch, out_dir):
    torch.manual_seed(1234)
    text = open(os.path.join(ROOT, "nets", f"{name}.cfg")).read()
    net = SpecNet(text).train()
    # Non-trivial batch-norm statistics and affine parameters.
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.8, 1.2)
    before = {k: v.clone() for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}
    x = torch.randn([batch] + net.input_shape)
    labels = torch.randint(0, 10, (batch,), dtype=torch.int32)
    logits = net(x)
    loss = torch.nn.functional.cross_entropy(logits, labels.long())
    loss.backward()
    tensors = {"input": x, "labels": labels, "logits": logits, "loss": loss.reshape(1)}
    params = dict(net.named_parameters())
    for k, v in before.items():
        tensors[f"param/{k}"] = v
        if k in params:
            tensors[f"grad/{k}"] = params[k].grad
        else:
            tensors[f"after/{k}"] = net.state_dict()[k]
    save_safetensors(os.path.join(out_dir, f"{name}.safetensors"), tensors)


def main():
    out_dir = sys.argv[1]
    os.makedirs(out_dir, exist_ok=True)
    torch.set_num_threads(1)
    for name, batch in NETS.items():
        golden(name, batch, out_dir)


if __name__ == "__main__":
    main()
