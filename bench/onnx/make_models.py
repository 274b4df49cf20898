"""The ONNX models of the ONNX benchmark: torchvision's resnet18, resnet50,
mobilenet_v2, convnext_tiny, vit_b_16 and swin_t with random weights
(torch.manual_seed(0)), in eval mode, exported by torch.onnx.export with a
dynamic batch ("batch") and a 3x224x224 input named "input", output
"output": the CNNs at opset 13, the three transformer-era networks at 17
(the opset that writes LayerNormalization as one operator). The batch norm
running statistics are set to random values too (mean N(0, 0.1), var
U(0.5, 1.5)), and so are the layer norms' scales (U(0.5, 1.5)) and biases
(N(0, 0.1)), so that no engine can fold them away as the identity.

    /usr/bin/python3 bench/onnx/make_models.py OUT_DIR [NAME...]

Writes OUT_DIR/<name>.onnx; a file already there is kept (delete it to
export again). Also used by bench/onnx/torch_peer.py to build the same
module.
"""
import os
import sys

import torch
import torchvision

NETS = ["resnet18", "resnet50", "mobilenet_v2", "convnext_tiny", "vit_b_16", "swin_t"]
OPSET = {"convnext_tiny": 17, "vit_b_16": 17, "swin_t": 17}


def build(name):
    torch.manual_seed(0)
    net = getattr(torchvision.models, name)(weights=None)
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
            if isinstance(m, torch.nn.LayerNorm) and m.elementwise_affine:
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
    return net.eval()


def export(name, path):
    net = build(name)
    x = torch.randn(1, 3, 224, 224)
    tmp = path + ".tmp"
    torch.onnx.export(net, x, tmp, opset_version=OPSET.get(name, 13), input_names=["input"],
                      output_names=["output"],
                      dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    os.replace(tmp, path)


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    for name in sys.argv[2:] or NETS:
        if name not in NETS:
            sys.exit(f"make_models.py: unknown network {name} (known: {', '.join(NETS)})")
        path = os.path.join(out, f"{name}.onnx")
        if not os.path.exists(path):
            export(name, path)
            print(f"wrote {path}", flush=True)


if __name__ == "__main__":
    main()
