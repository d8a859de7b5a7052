"""Shared fixtures: galaxy-like images and known weights, made by the test helpers.

No binary fixture is committed: every image, weight and model file is generated
here from seeded random numbers and written to temporary folders.

The ``numeric`` marker: oneDNN changes TensorFlow's rounding, and TensorFlow
turns it on by itself on some CPUs only, so ``make test`` (what CI runs) runs
the whole suite with ``TF_ENABLE_ONEDNN_OPTS=1`` and then the tests marked
``numeric`` again with ``TF_ENABLE_ONEDNN_OPTS=0``. A test whose numbers come
from TensorFlow (network outputs against the numpy reference in
``reference.py``, numbers of a training run, doctests) joins that second pass
with ``@pytest.mark.numeric`` (or ``pytestmark = pytest.mark.numeric`` for a
whole module). Keep the pass short (about two minutes on 2 cores): mark one
fast test per path rather than every variant. Tolerances on network outputs
are 1e-4, whatever the setting; never compare them exactly.
"""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

# Keep TensorFlow's C++ start-up chatter out of the test output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import reference  # noqa: E402

#: About the most disk one test needs at a time (a few SDSS-shaped model files of 230 MB, with the session's fixtures).
_DISK_NEEDED_GB = 4


def pytest_report_header(config):
    """The free disk space in the temporary folder, where every test writes: a full disk fails tests in bulk."""
    import shutil
    import tempfile

    free_gb = shutil.disk_usage(tempfile.gettempdir()).free / 1e9
    line = f"free disk space in {tempfile.gettempdir()}: {free_gb:.1f} GB"
    if free_gb < _DISK_NEEDED_GB:
        line += f" (the suite needs about {_DISK_NEEDED_GB} GB: expect errors from a full disk)"
    return line

#: Shapes the backends are checked at: the two presets and a non-square,
#: two-band custom shape (which exercises the flatten order).
CHECK_SHAPES = {"SDSS": (167, 167, 1), "CANDELS": (83, 83, 1), "custom": (72, 60, 2)}


@pytest.fixture(autouse=True)
def _never_reach_the_real_server(monkeypatch, tmp_path_factory):
    """No test may reach the published FTP server: offline, with an empty private cache."""
    monkeypatch.setenv("GAMORNET_OFFLINE", "1")
    monkeypatch.setenv("GAMORNET_CACHE_DIR", str(tmp_path_factory.mktemp("gamornet-cache")))
    monkeypatch.delenv("GAMORNET_MIRROR", raising=False)


@pytest.fixture(scope="session")
def keras_case():
    """Per shape name: (images, weights) with known weights calibrated for the Keras LRN."""
    cache = {}

    def make(name, n_images=5):
        key = (name, n_images)
        if key not in cache:
            shape = CHECK_SHAPES[name]
            images = reference.galaxy_images(n_images, shape, seed=1)
            weights = reference.calibrated_weights(shape, images[:3], reference.lrn_keras, seed=2)
            cache[key] = (images, weights)
        return cache[key]

    return make
