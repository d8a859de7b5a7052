"""GaMorNet: the Galaxy Morphology Network (Ghosh et al. 2020, ApJ 895, 112).

A convolutional network that classifies single-band galaxy images as
disk-dominated, indeterminate or bulge-dominated. The two backends live in
:mod:`gamornet.keras_module` and :mod:`gamornet.tflearn_module`; importing the
package itself loads neither TensorFlow nor tflearn.
"""

from gamornet._version import __version__

__author__ = "Aritra Ghosh and contributors"
__copyright__ = "Copyright 2020-2026, Aritra Ghosh and contributors"
__license__ = "GPL-3.0-or-later"

__all__ = ["__version__", "__author__", "__copyright__", "__license__", "load_predictor", "Predictor"]


def __getattr__(name):
    # The predictor imports TensorFlow when a model is loaded; `import gamornet` stays light.
    if name in ("load_predictor", "Predictor"):
        from gamornet.inference import predictor

        return getattr(predictor, name)
    raise AttributeError(f"module 'gamornet' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + ["load_predictor", "Predictor"])
