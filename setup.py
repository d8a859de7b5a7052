"""Builds the ``gamornet`` package (TensorFlow with CUDA on Linux).

``pip`` only ever runs ``setup.py``; for an editable install of the CPU
variant, set ``GAMORNET_VARIANT=cpu`` (``make install`` does this). To build
``gamornet-cpu`` directly, run ``setup_cpu.py``.
"""

import os
import sys

from setuptools import setup

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from setup_common import setup_kwargs  # noqa: E402

setup(**setup_kwargs(os.environ.get("GAMORNET_VARIANT", "gpu")))
