"""The int8 model of the tagging benchmark's peer, made once as a PyTorch
user would: torchvision's resnet18 (the module bench/onnx/make_models.py
builds, the same weights as osprey's model), wrapped to give its 512-d
pooled features and its logits in one forward pass, quantised by PyTorch's
FX graph mode post-training static quantisation (its default qconfig for
the engine: per-channel weights, histogram observers on activations) on
the best quantised engine of this build (oneDNN on Debian's, which has no
FBGEMM), calibrated on the same photos osprey's int8 model is calibrated
on, then traced and saved as TorchScript for peer.py --int8.

    /usr/bin/python3 bench/pipeline/quantize_peer.py OUT.pt LIST_OF_PHOTOS

Prints the engine used.
"""
import os
import sys

import torch
from torch.ao.quantization import get_default_qconfig_mapping
from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "onnx"))
from make_models import build  # noqa: E402
from peer import PilPhotos, list_inputs  # noqa: E402


class FeaturesAndLogits(torch.nn.Module):
    def __init__(self, net):
        super().__init__()
        self.features = torch.nn.Sequential(*list(net.children())[:-1])
        self.fc = net.fc

    def forward(self, x):
        f = torch.flatten(self.features(x), 1)
        return f, self.fc(f)


def engine():
    have = torch.backends.quantized.supported_engines
    return next(e for e in ("fbgemm", "onednn", "x86", "qnnpack") if e in have)


def main():
    out, photos = sys.argv[1], sys.argv[2]
    e = engine()
    torch.backends.quantized.engine = e
    model = FeaturesAndLogits(build("resnet18")).eval()
    data = PilPhotos(list_inputs(photos))
    loader = torch.utils.data.DataLoader(data, batch_size=16, num_workers=2)
    example = torch.randn(1, 3, 224, 224)
    prepared = prepare_fx(model, get_default_qconfig_mapping(e), (example,))
    with torch.inference_mode():
        for x, _ in loader:
            prepared(x)
    q = convert_fx(prepared)
    with torch.inference_mode():
        traced = torch.jit.trace(q, example)
    traced.save(out)
    print(e)


if __name__ == "__main__":
    main()
