"""Builds the ``gamornet-cpu`` package (``tensorflow-cpu``)."""

import os
import sys

from setuptools import setup

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from setup_common import setup_kwargs  # noqa: E402

setup(**setup_kwargs("cpu"))
