"""The models of the tagging benchmark, as ONNX files for `osprey import`:

- resnet18: torchvision's, random weights with torch.manual_seed(0) and
  random batch-norm statistics: bench/onnx/make_models.py exports it (into
  the same folder bench/onnx/run keeps its models in) and peer.py builds the
  same module;
- tiny: global average pool of the 3x224x224 input and a 3 -> 1000 linear
  layer, so that `osprey tag` with it measures everything but the network
  (read, hash, decode, resize, normalise, write);
- labels.txt: 1000 label names, the class numbers "0" to "999" (the
  descriptions the peer writes).

    /usr/bin/python3 bench/pipeline/models.py ONNX_DIR OUT_DIR

Writes ONNX_DIR/resnet18.onnx (if missing), OUT_DIR/tiny.onnx and
OUT_DIR/labels.txt (if missing).
"""
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def export_tiny(path):
    import torch
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                              torch.nn.Linear(3, 1000)).eval()
    tmp = path + ".tmp"
    torch.onnx.export(net, torch.randn(1, 3, 224, 224), tmp, opset_version=13,
                      input_names=["input"], output_names=["output"],
                      dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    os.replace(tmp, path)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    onnx_dir, out = sys.argv[1], sys.argv[2]
    subprocess.run([sys.executable, os.path.join(HERE, "..", "onnx", "make_models.py"),
                    onnx_dir, "resnet18"], check=True)
    os.makedirs(out, exist_ok=True)
    tiny = os.path.join(out, "tiny.onnx")
    if not os.path.exists(tiny):
        export_tiny(tiny)
        print(f"wrote {tiny}", flush=True)
    labels = os.path.join(out, "labels.txt")
    if not os.path.exists(labels):
        with open(labels, "w") as f:
            f.write("".join(f"{i}\n" for i in range(1000)))


if __name__ == "__main__":
    main()
