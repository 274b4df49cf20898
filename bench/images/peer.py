"""The peer: PIL decode + torchvision Resize(256), CenterCrop(224),
ToTensor, Normalize, through a torch DataLoader with T worker processes
(the usual PyTorch input pipeline). Prints images/s over the passes after
the first (which warms the page cache, as osprey's bench does).

    peer.py DIR THREADS PASSES [--draft]

--draft also lets PIL shrink JPEGs on load (Image.draft, libjpeg's DCT
scaling), a step torchvision does not take by itself.
"""
import glob
import json
import sys
import time

import torch
import torchvision.transforms as T
from PIL import Image

MEAN, STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


class Photos(torch.utils.data.Dataset):
    def __init__(self, root, draft):
        self.files = sorted(glob.glob(root + "/*/*.jpg"))
        self.draft = draft
        self.t = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), T.Normalize(MEAN, STD)])

    def __len__(self):
        return len(self.files)

    def __getitem__(self, i):
        img = Image.open(self.files[i])
        if self.draft:
            img.draft("RGB", (256, 256))
        return self.t(img.convert("RGB")), 0


def main():
    root, threads, passes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    draft = "--draft" in sys.argv
    torch.set_num_threads(1)
    data = Photos(root, draft)
    loader = torch.utils.data.DataLoader(data, batch_size=64, num_workers=threads,
                                         persistent_workers=True)
    images, start = 0, None
    for p in range(passes):
        if p == 1:
            start = time.perf_counter()
        for x, _ in loader:
            if p >= 1:
                images += x.shape[0]
    seconds = time.perf_counter() - start
    print(json.dumps({"images": images, "seconds": seconds, "images_per_s": images / seconds}))


if __name__ == "__main__":
    main()
