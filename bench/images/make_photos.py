"""Writes N photo-sized JPEGs (default 1600x1200, quality 90, 4:2:0) of
synthetic scenes: smooth colour fields, edges and fine texture, so that the
encoded size (0.4-0.7 MB) and decode work are those of camera photos.

    make_photos.py OUT N [WIDTH HEIGHT]

OUT/photos/<n>.jpg; a class folder, so that OUT is an image-folder dataset.
"""
import os
import sys

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def scene(rng, w, h):
    # low frequencies: a coarse random field blown up smoothly
    coarse = rng.randint(0, 256, (6, 8, 3)).astype(np.uint8)
    img = Image.fromarray(coarse).resize((w, h), Image.BICUBIC)
    d = ImageDraw.Draw(img)
    for _ in range(12):  # objects with hard edges
        x, y = rng.randint(0, w), rng.randint(0, h)
        r = rng.randint(h // 20, h // 4)
        fill = tuple(int(v) for v in rng.randint(0, 256, 3))
        if rng.rand() < 0.5:
            d.ellipse([x - r, y - r, x + r, y + r], fill=fill)
        else:
            d.rectangle([x - r, y - r // 2, x + r, y + r // 2], fill=fill)
    img = img.filter(ImageFilter.GaussianBlur(1.5))
    # sensor-like grain and texture: the high frequencies JPEG has to code
    a = np.asarray(img).astype(np.int16)
    a += rng.normal(0, 6, (h, w, 1)).astype(np.int16)
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


def main():
    out, n = sys.argv[1], int(sys.argv[2])
    w, h = (int(sys.argv[3]), int(sys.argv[4])) if len(sys.argv) > 4 else (1600, 1200)
    os.makedirs(os.path.join(out, "photos"), exist_ok=True)
    rng = np.random.RandomState(1)
    for i in range(n):
        path = os.path.join(out, "photos", "%04d.jpg" % i)
        if not os.path.exists(path):
            scene(rng, w, h).save(path, "JPEG", quality=90)


if __name__ == "__main__":
    main()
