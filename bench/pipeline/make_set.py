"""The photos of the tagging benchmark: N JPEGs of photo size, a mix around
1600x1200 (landscape and portrait, 1.2 to 3.1 megapixels), quality 90,
4:2:0, of the synthetic scenes of bench/images/make_photos.py (smooth colour
fields, hard-edged shapes, sensor-like grain), so that decoding costs what
it costs on camera photos.

    /usr/bin/python3 bench/pipeline/make_set.py OUT N

Writes OUT/photos/NNNN.jpg. Each image has its own seed (10000 + its
number), so the set is the same whatever was there before; a file already
there is kept.
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "images"))
from make_photos import scene  # noqa: E402

SIZES = [(1600, 1200), (1600, 1200), (1600, 1200), (1200, 1600), (2048, 1536),
         (1920, 1080), (1280, 960), (1440, 1080)]


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    out, n = sys.argv[1], int(sys.argv[2])
    folder = os.path.join(out, "photos")
    os.makedirs(folder, exist_ok=True)
    made = 0
    for i in range(n):
        path = os.path.join(folder, "%04d.jpg" % i)
        if os.path.exists(path):
            continue
        rng = np.random.RandomState(10000 + i)
        w, h = SIZES[rng.randint(len(SIZES))]
        tmp = path + ".tmp"
        scene(rng, w, h).save(tmp, "JPEG", quality=90)
        os.replace(tmp, path)
        made += 1
    if made:
        print(f"made {made} photos in {folder}", flush=True)


if __name__ == "__main__":
    main()
