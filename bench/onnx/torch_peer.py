"""The PyTorch peer of the ONNX benchmark: the torchvision module that
make_models.py exports (same seed, same weights), in eval mode under
torch.no_grad(), on a random 3x224x224 batch held in memory. Prints one
JSON object like `osprey bench --json`: the median images/s over the
repetitions, each about --seconds long after a warm-up.

    /usr/bin/python3 bench/onnx/torch_peer.py --net resnet18 --batch B --threads T
                                              [--channels-last] [--int8]
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_models import NETS, build  # noqa: E402


def quantize(net, x):
    """PyTorch's own int8: FX graph mode static quantisation, its default
    per-channel weight and histogram activation observers, calibrated on
    eight random batches, on the best quantised engine this build has
    (oneDNN, which uses the CPU's VNNI; Debian's build has no FBGEMM)."""
    from torch.ao.quantization import get_default_qconfig_mapping
    from torch.ao.quantization.quantize_fx import convert_fx, prepare_fx
    engines = torch.backends.quantized.supported_engines
    engine = next(e for e in ("fbgemm", "onednn", "x86", "qnnpack") if e in engines)
    torch.backends.quantized.engine = engine
    prepared = prepare_fx(net, get_default_qconfig_mapping(engine), (x[:1],))
    with torch.inference_mode():
        for _ in range(8):
            prepared(torch.randn_like(x))
    return convert_fx(prepared)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--net", required=True, choices=NETS)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--channels-last", action="store_true",
                    help="module and input in channels_last memory format")
    ap.add_argument("--int8", action="store_true",
                    help="post-training static int8 quantisation (FX graph mode)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    net = build(a.net)
    x = torch.randn(a.batch, 3, 224, 224)
    if a.int8:
        net = quantize(net, x)
    elif a.channels_last:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        net(x)  # warm-up: first-run allocations
        t0 = time.perf_counter()
        net(x)
        one = time.perf_counter() - t0
        steps = max(1, round(a.seconds / max(one, 1e-6)))
        rates = []
        for _ in range(a.reps):
            t0 = time.perf_counter()
            for _ in range(steps):
                net(x)
            rates.append(steps * a.batch / (time.perf_counter() - t0))
    print(json.dumps({"images_per_s": statistics.median(rates), "steps": steps, "reps": rates}))


if __name__ == "__main__":
    main()
