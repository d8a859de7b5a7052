"""Print the largest difference between gamornet_predict_keras and the numpy reference at each shape.

Run from the repository root: .venv/bin/python benchmarks/reference_agreement.py
"""
import os, sys, tempfile
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
import numpy as np, reference
from legacy_files import write_keras2_file
from gamornet.keras_module import gamornet_predict_keras
for name, shape in [("SDSS", (167,167,1)), ("CANDELS", (83,83,1)), ((72,60,2), (72,60,2))]:
    imgs = reference.galaxy_images(5, shape, seed=1)
    w = reference.calibrated_weights(shape, imgs[:3], reference.lrn_keras, seed=2)
    e = reference.forward(imgs, w, reference.lrn_keras)
    worst = 0
    for layout in ("model", "weights"):
        p = write_keras2_file(tempfile.mkdtemp() + "/m.hdf5", w, layout=layout)
        worst = max([worst] + [np.abs(gamornet_predict_keras(imgs, p, name, batch_size=b) - e).max() for b in (2, 5, 64)])
    print(name, f"{worst:.2e}")
