"""Print the largest difference between gamornet_predict_keras and the numpy reference at each shape.

The reference is the tests' independent numpy forward pass (tests/reference.py); the model files are
written in both legacy Keras 2 layouts (whole model and weights only) and predicted with batch sizes
2, 5 and 64.

Run from the repository root: .venv/bin/python benchmarks/reference_agreement.py
"""

import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import reference  # noqa: E402  (the tests' numpy reference)
from legacy_files import write_keras2_file  # noqa: E402

from gamornet.keras_module import gamornet_predict_keras  # noqa: E402

SHAPES = [("SDSS", (167, 167, 1)), ("CANDELS", (83, 83, 1)), ((72, 60, 2), (72, 60, 2))]


def largest_difference(name, shape, folder):
    images = reference.galaxy_images(5, shape, seed=1)
    weights = reference.calibrated_weights(shape, images[:3], reference.lrn_keras, seed=2)
    expected = reference.forward(images, weights, reference.lrn_keras)
    worst = 0.0
    for layout in ("model", "weights"):
        path = write_keras2_file(os.path.join(folder, f"{layout}.hdf5"), weights, layout=layout)
        for batch_size in (2, 5, 64):
            predicted = gamornet_predict_keras(images, path, name, batch_size=batch_size)
            worst = max(worst, float(np.abs(predicted - expected).max()))
    return worst


def main():
    with tempfile.TemporaryDirectory(prefix="gamornet-reference-") as folder:
        for name, shape in SHAPES:
            print(name, f"{largest_difference(name, shape, folder):.2e}")


if __name__ == "__main__":
    main()
