"""Sphinx configuration of the GaMorNet documentation.

Build the site with warnings treated as errors (``make docs`` does this)::

    python -m sphinx -W --keep-going -b html docs docs/_build/html

and run the code examples of the pages as doctests::

    python -m sphinx -W --keep-going -b doctest docs docs/_build/doctest

The API pages import the real modules (TensorFlow, Keras and tflearn are all
installed with the package), so nothing is mocked.
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "_ext"))
sys.path.insert(0, os.path.dirname(HERE))

# Quiet TensorFlow while autodoc imports the backends; the documented behaviour
# does not depend on it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")
# The doctests never reach a network: a published name that is not cached fails
# at once instead of trying the FTP server.
os.environ.setdefault("GAMORNET_OFFLINE", "1")

import gamornet  # noqa: E402

project = "GaMorNet"
author = gamornet.__author__
copyright = gamornet.__copyright__.replace("Copyright ", "")
release = gamornet.__version__
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.doctest",
    "sphinx.ext.mathjax",
    "gamornet_docs",
]

exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
root_doc = "index"
language = "en"
nitpicky = False

# numpydoc-style docstrings, rendered by napoleon.
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_rtype = False
napoleon_use_param = True
napoleon_use_ivar = True

autodoc_member_order = "bysource"
autodoc_typehints = "none"
autodoc_default_options = {"members": True, "show-inheritance": False}

# Each doctest group starts from a clean namespace; numbers are printed with
# explicit rounding in the pages, so no float option is needed.
doctest_default_flags = (
    __import__("doctest").ELLIPSIS
    | __import__("doctest").NORMALIZE_WHITESPACE
    | __import__("doctest").DONT_ACCEPT_TRUE_FOR_1
)
doctest_global_setup = """
import os
import numpy as np
os.environ.setdefault("GAMORNET_OFFLINE", "1")
"""

html_theme = "furo"
html_title = f"GaMorNet {release}"
html_static_path = []
html_show_sourcelink = False
pygments_style = "sphinx"
