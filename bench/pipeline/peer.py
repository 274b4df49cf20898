"""The peer of the tagging benchmark: what a competent PyTorch user writes to
tag a folder of photos and keep a feature vector per image.

- input: torch.utils.data.DataLoader with W worker processes; each image
  decoded with shrink-on-load and turned into a normalised 3x224x224 tensor:
  * --decoder pil: PIL.Image.open, img.draft("RGB", (256, 256)) (libjpeg's
    DCT scaling), torchvision Resize(256), CenterCrop(224), ToTensor,
    Normalize (ImageNet's mean and std);
  * --decoder cv2: OpenCV (python3-opencv) cv2.imread with
    IMREAD_REDUCED_COLOR_2/4/8 (the largest reduction that keeps the short
    side >= 256, read from the header), cv2.resize (INTER_AREA) to a short
    side of 256, the middle 224x224, BGR -> RGB and the normalisation in
    numpy;
- the model: torchvision's resnet18 built by bench/onnx/make_models.py (the
  very module, seed and weights that were exported to ONNX for osprey), in
  eval mode under torch.inference_mode(), optionally channels_last; one
  forward pass per batch: the network up to its global pool gives the
  512-d features, its fc layer the 1000 logits;
- outputs: OUT/tags.jsonl, a line an image {"id", "path", "labels":
  [{"description", "score"}]} with the softmax top-5 (descriptions are the
  class numbers, as osprey's model's label names), and OUT/vectors.npy
  (N x 512 float32) with OUT/paths.txt (the row order).

Threads: torch.set_num_threads(--threads) in the main process (inference);
the DataLoader's workers run one thread each (PyTorch's default for them).
Environment (OPENBLAS_*, OMP_WAIT_POLICY) is the caller's.

    /usr/bin/python3 bench/pipeline/peer.py INPUT OUT [--batch B] [--workers W]
        [--threads T] [--decoder pil|cv2] [--channels-last] [--no-model] [--int8 MODEL.pt]

INPUT is a folder (every .jpg below it, sorted) or a list file (a path a
line, relative to the list's folder). --no-model only decodes (the
DataLoader alone, no inference, no outputs): the decoding side's speed;
--infer-only SECONDS only runs the network (features, fc, softmax, top-5)
on a random batch held in memory for about that long (INPUT and OUT are
then not read).
Prints one JSON object: images, seconds (from the first batch asked for to
the outputs closed), images_per_s over those seconds, startup_s (imports
and model building, from the interpreter's start).
"""
import argparse
import json
import os
import sys
import time

T_START = time.time()

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torchvision.transforms as T  # noqa: E402
from PIL import Image  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "onnx"))
from make_models import build  # noqa: E402

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
SIZE, CROP = 256, 224


def list_inputs(src):
    if os.path.isdir(src):
        out = []
        for d, dirs, files in os.walk(src):
            dirs.sort()
            out += [os.path.join(d, f) for f in sorted(files)
                    if f.lower().endswith((".jpg", ".jpeg"))]
        return out
    base = os.path.dirname(src)
    with open(src) as f:
        return [os.path.join(base, l.strip()) for l in f if l.strip() and not l.startswith("#")]


class PilPhotos(torch.utils.data.Dataset):
    def __init__(self, files):
        self.files = files
        self.t = T.Compose([T.Resize(SIZE), T.CenterCrop(CROP), T.ToTensor(),
                            T.Normalize(MEAN, STD)])

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        img = Image.open(self.files[i])
        img.draft("RGB", (SIZE, SIZE))
        return self.t(img.convert("RGB")), self.files[i]


class Cv2Photos(torch.utils.data.Dataset):
    def __init__(self, files):
        import cv2
        self.files = files
        self.flags = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2,
                      4: cv2.IMREAD_REDUCED_COLOR_4, 8: cv2.IMREAD_REDUCED_COLOR_8}
        # (x - mean) / std on 0..255 BGR values, as one multiply-add per value
        self.scale = np.array([1 / (255 * s) for s in STD[::-1]], np.float32)
        self.shift = np.array([-m / s for m, s in zip(MEAN[::-1], STD[::-1])], np.float32)

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        import cv2  # a module is not kept on the dataset: workers may pickle it
        path = self.files[i]
        with Image.open(path) as im:  # the header only: the size
            w, h = im.size
        f = 8
        while f > 1 and min(w, h) // f < SIZE:
            f //= 2
        img = cv2.imread(path, self.flags[f])
        if img is None:
            raise RuntimeError(f"{path}: OpenCV cannot read it")
        h, w = img.shape[:2]
        s = SIZE / min(w, h)
        nw, nh = max(SIZE, round(w * s)), max(SIZE, round(h * s))
        img = cv2.resize(img, (nw, nh), interpolation=cv2.INTER_AREA)
        y, x = (nh - CROP) // 2, (nw - CROP) // 2
        img = img[y:y + CROP, x:x + CROP]
        a = img.astype(np.float32) * self.scale + self.shift  # HWC, BGR
        a = np.ascontiguousarray(a[:, :, ::-1].transpose(2, 0, 1))  # CHW, RGB
        return torch.from_numpy(a), path


def one_thread_cv2(_):
    import cv2
    cv2.setNumThreads(1)


def infer_only(a):
    """The network alone, as the main loop runs it, on one random batch."""
    net = build("resnet18")
    x = torch.randn(a.batch, 3, CROP, CROP)
    if a.channels_last:
        net = net.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    features = torch.nn.Sequential(*list(net.children())[:-1])
    with torch.inference_mode():
        def step():
            torch.softmax(net.fc(torch.flatten(features(x), 1)), 1).topk(a.top_k, 1)
        step()  # warm-up
        steps, t0 = 0, time.perf_counter()
        while steps < 2 or time.perf_counter() - t0 < a.infer_only:
            step()
            steps += 1
        seconds = time.perf_counter() - t0
    print(json.dumps({"images": steps * a.batch, "seconds": seconds,
                      "images_per_s": steps * a.batch / seconds}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("input")
    ap.add_argument("out")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--decoder", choices=["pil", "cv2"], default="pil")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--no-model", action="store_true")
    ap.add_argument("--infer-only", type=float, metavar="SECONDS",
                    help="only the network, on a random batch in memory, for about SECONDS")
    ap.add_argument("--top-k", type=int, default=5)
    ap.add_argument("--int8", metavar="MODEL.pt",
                    help="the int8 TorchScript model of quantize_peer.py instead of float32")
    a = ap.parse_args()

    torch.set_num_threads(a.threads)
    if a.infer_only:
        return infer_only(a)
    files = list_inputs(a.input)
    data = (Cv2Photos if a.decoder == "cv2" else PilPhotos)(files)
    loader = torch.utils.data.DataLoader(
        data, batch_size=a.batch, num_workers=a.workers,
        worker_init_fn=one_thread_cv2 if a.decoder == "cv2" else None)
    if a.int8:
        from quantize_peer import engine
        torch.backends.quantized.engine = engine()
        both = torch.jit.load(a.int8)  # features and logits in one pass
    else:
        net = build("resnet18")
        if a.channels_last:
            net = net.to(memory_format=torch.channels_last)
        features = torch.nn.Sequential(*list(net.children())[:-1])  # up to the global pool
        fc = net.fc

        def both(x):
            f = torch.flatten(features(x), 1)
            return f, fc(f)
    startup = time.time() - T_START

    images = 0
    t0 = time.perf_counter()
    if a.no_model:
        for x, paths in loader:
            images += len(paths)
    else:
        os.makedirs(a.out, exist_ok=True)
        vectors, order = [], []
        with open(os.path.join(a.out, "tags.jsonl"), "w") as tags, torch.inference_mode():
            for x, paths in loader:
                if a.channels_last:
                    x = x.contiguous(memory_format=torch.channels_last)
                f, logits = both(x)
                p = torch.softmax(logits, 1)
                score, label = p.topk(a.top_k, 1)
                score, label = score.tolist(), label.tolist()
                for k, path in enumerate(paths):
                    tags.write(json.dumps({
                        "id": images + k, "path": path,
                        "labels": [{"description": str(c), "score": round(s, 6)}
                                   for c, s in zip(label[k], score[k])]}) + "\n")
                vectors.append(f.numpy().copy())
                order += paths
                images += len(paths)
        np.save(os.path.join(a.out, "vectors.npy"),
                np.concatenate(vectors) if vectors else np.zeros((0, 512), np.float32))
        with open(os.path.join(a.out, "paths.txt"), "w") as f:
            f.write("".join(p + "\n" for p in order))
    seconds = time.perf_counter() - t0
    print(json.dumps({"images": images, "seconds": seconds, "images_per_s": images / seconds,
                      "startup_s": startup}))


if __name__ == "__main__":
    main()
