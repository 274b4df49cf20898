"""Compares osprey's output with PyTorch's:

    /usr/bin/python3 tests/golden/compare_npy.py GOT.npy WANT.npy TOLERANCE

Passes when max |got - want| <= TOLERANCE * max |want| (the shapes must hold
the same number of values per sample); prints both errors either way."""
import sys

import numpy as np

got, want, tol = np.load(sys.argv[1]), np.load(sys.argv[2]), float(sys.argv[3])
if got.shape[0] != want.shape[0] or got.size != want.size:
    sys.exit(f"shape {got.shape} != {want.shape}")
got, want = got.reshape(want.shape[0], -1).astype(np.float64), want.reshape(want.shape[0], -1).astype(np.float64)
scale = max(np.abs(want).max(), 1e-30)
err = np.abs(got - want).max() / scale
elem = (np.abs(got - want) / np.maximum(np.abs(want), 1e-3 * scale)).max()
print(f"max error {err:.2e} of the largest value; elementwise {elem:.2e} (floor 1e-3 of it)")
sys.exit(0 if err <= tol else f"error {err:.2e} over {tol}")
