"""The one package definition shared by ``setup.py`` and ``setup_cpu.py``.

The two pip packages, ``gamornet`` and ``gamornet-cpu``, differ only in their
name and in the TensorFlow distribution they require. Everything else comes
from :func:`setup_kwargs`, and ``tests/test_packaging.py`` checks that the
built metadata of the two differs in nothing else.
"""

import os
import re

from setuptools import find_packages

HERE = os.path.dirname(os.path.abspath(__file__))

# Lower bounds are the versions the test suite has been run against.
TENSORFLOW_VERSION = ">=2.21"

TENSORFLOW_REQUIREMENTS = {
    "gpu": [
        'tensorflow[and-cuda]' + TENSORFLOW_VERSION + '; sys_platform == "linux"',
        'tensorflow' + TENSORFLOW_VERSION + '; sys_platform != "linux"',
    ],
    "cpu": ["tensorflow-cpu" + TENSORFLOW_VERSION],
}

PACKAGE_NAMES = {"gpu": "gamornet", "cpu": "gamornet-cpu"}

COMMON_REQUIREMENTS = [
    "keras>=3.12",
    "numpy>=2.2",
    "h5py>=3.14",
    "tflearn>=0.5.0",
    "wget>=3.2",
    "progressbar2>=4.6",
    "astropy>=6.1",
    "pillow>=10.0",
]

EXTRAS = {
    "sim": ["galsim>=2.8", "matplotlib>=3.8"],
    "test": ["pytest>=8.0", "pyftpdlib>=2.0", "matplotlib>=3.8"],
    # Cutouts by RA/Dec from survey images (gamornet.survey.cutouts): reproject resamples, SciPy indexes the footprints,
    # pyarrow reads catalogues in Parquet (as do gamornet train's). reproject 0.14.1 is the newest for Python 3.10
    # (0.21 on 3.11-3.13).
    "survey": ["reproject>=0.14.1", "scipy>=1.10", "pyarrow>=17.0"],
    # Building the documentation and running the tutorials needs Python >= 3.11 (Sphinx 9).
    # precision="int8": NNCF quantizes the network, OpenVINO runs it (wheels for Python 3.10-3.13).
    "fast": ["openvino>=2026.4", "nncf>=3.4"],
    "docs": ['sphinx>=9.0; python_version >= "3.11"', "furo>=2025.12.19", "nbclient>=0.11", "nbformat>=5.11", "ipykernel>=7.4",
             "matplotlib>=3.8"],
    # gamornet.survey.distributed and `gamornet predict --workers / --scheduler`: Dask, and pyarrow for the Parquet
    # output (dask[dataframe] brings pandas, to read it back as a data frame). tests/test_distributed.py passes
    # with these lower bounds (dask and distributed 2024.8.2, pyarrow 17.0) as with dask 2026.8 and pyarrow 26.
    "distributed": ["dask[dataframe]>=2024.8.2", "distributed>=2024.8.2", "pyarrow>=17.0"],
}


def _read_version():
    with open(os.path.join(HERE, "gamornet", "_version.py"), encoding="utf-8") as init:
        return re.search(r'^__version__ = "([^"]+)"', init.read(), re.M).group(1)


def _read_long_description():
    with open(os.path.join(HERE, "README.md"), encoding="utf-8") as readme:
        return readme.read()


def setup_kwargs(variant):
    """Return the ``setuptools.setup`` keyword arguments of one variant.

    Parameters
    ----------
    variant : {'gpu', 'cpu'}
        ``'gpu'`` builds ``gamornet``; ``'cpu'`` builds ``gamornet-cpu``.
    """
    if variant not in PACKAGE_NAMES:
        raise ValueError(
            f"variant must be one of {sorted(PACKAGE_NAMES)}. Received: variant={variant!r}"
        )
    return dict(
        name=PACKAGE_NAMES[variant],
        version=_read_version(),
        description=(
            "GaMorNet: a convolutional network that classifies galaxies as disk-dominated, "
            "indeterminate or bulge-dominated (Ghosh et al. 2020, ApJ 895, 112)"
        ),
        long_description=_read_long_description(),
        long_description_content_type="text/markdown",
        author="Aritra Ghosh and contributors",
        license="GPL-3.0-or-later",
        url="https://github.com/aritraghsh09/GaMorNet",
        packages=find_packages(include=["gamornet", "gamornet.*"]),
        python_requires=">=3.10",
        install_requires=TENSORFLOW_REQUIREMENTS[variant] + COMMON_REQUIREMENTS,
        extras_require=EXTRAS,
        entry_points={"console_scripts": ["gamornet = gamornet.cli.main:main"]},
        classifiers=[
            "Programming Language :: Python :: 3",
            "Programming Language :: Python :: 3.10",
            "Programming Language :: Python :: 3.11",
            "Programming Language :: Python :: 3.12",
            "Operating System :: OS Independent",
            "Topic :: Scientific/Engineering :: Astronomy",
            "Topic :: Scientific/Engineering :: Artificial Intelligence",
        ],
    )
