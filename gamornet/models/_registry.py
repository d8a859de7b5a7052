"""The published GaMorNet models and data files, kept as data.

Backend-neutral: imports neither TensorFlow nor tflearn. Builders never hold
URLs; the downloader (``gamornet.models._download``), :mod:`gamornet.models` and the
CLI read this table. Paths are relative to the public data release's base URL,
``DEFAULT_BASE_URL``. Each entry knows its files and how to check them once
downloaded, so the downloader never asks what kind of entry it holds.
"""

import os
import tarfile
import zlib
from dataclasses import dataclass, field

from gamornet.models.formats.tflearn_checkpoint import SUFFIXES as TFLEARN_CHECKPOINT_SUFFIXES
from gamornet.presets import INPUT_SHAPES

#: The public data release of Ghosh et al. (2020): anonymous FTP at Yale.
DEFAULT_BASE_URL = "ftp://ftp.astro.yale.edu/pub/aghosh/"

CITATION = (
    "Ghosh, A., Urry, C. M., Wang, Z., et al. 2020, ApJ, 895, 112, doi:10.3847/1538-4357/ab8a47"
)

BACKENDS = ("keras", "tflearn")


@dataclass(frozen=True)
class PublishedModel:
    """One published model of one backend.

    Attributes
    ----------
    name : str
        The ``model_load_path`` name that selects it (``'SDSS_tl'`` ...).
    backend : {'keras', 'tflearn'}
    files : tuple of str
        Paths relative to the base URL. For TFLearn, the three checkpoint files.
    load_path : str
        The path, relative to the cache folder, handed to the backend's loader:
        the ``.hdf5`` file, or the TFLearn checkpoint prefix.
    input_shape : tuple of int
    sha256 : dict
        Known sha256 digests by relative path; ``None`` where none was published.
    description : str
    citation : str
    """

    name: str
    backend: str
    files: tuple
    load_path: str
    input_shape: tuple
    sha256: dict = field(default_factory=dict)
    description: str = ""
    citation: str = CITATION

    def file_hashes(self):
        """(relative path, published sha256 or None) of each file."""
        return [(path, self.sha256.get(path)) for path in self.files]

    def describe(self):
        """How messages name this entry: ``"the Keras model 'SDSS_tl'"``."""
        flavour = "Keras" if self.backend == "keras" else "TFLearn"
        return f"the {flavour} model {self.name!r}"

    def download_command(self, force=False):
        """The ``gamornet download`` command that fetches this entry."""
        return f"gamornet download {self.name} --backend {self.backend}" + (" --force" if force else "")

    @property
    def lock_name(self):
        """The name of this entry's lock file in the cache."""
        return f"{self.backend}-{self.name}.lock"

    def validate(self, local_load_path):
        """Raise ``OSError`` / ``ValueError`` unless the files at ``local_load_path`` hold this model.

        The format module of the backend (:mod:`gamornet.models.formats`) does the
        checking; TensorFlow is imported for a TFLearn checkpoint.
        """
        from gamornet.models import formats

        formats.check(local_load_path, self.input_shape, self.backend)


@dataclass(frozen=True)
class PublishedFile:
    """One published data file (tutorial data, prediction tables)."""

    name: str
    path: str
    sha256: str = None
    description: str = ""
    citation: str = CITATION

    @property
    def load_path(self):
        """The path, relative to the cache folder, of the file."""
        return self.path

    def file_hashes(self):
        """(relative path, published sha256 or None) of the file."""
        return [(self.path, self.sha256)]

    def describe(self):
        """How messages name this entry: ``"the data file 'predict_images'"``."""
        return f"the data file {self.name!r}"

    def download_command(self, force=False):
        """The ``gamornet download`` command that fetches this entry."""
        return f"gamornet download {self.name}" + (" --force" if force else "")

    @property
    def lock_name(self):
        """The name of this entry's lock file in the cache."""
        return f"file-{self.name}.lock"

    def validate(self, local_path):
        """Raise ``ValueError`` unless the file is non-empty and, for a ``.tar.gz``, a complete archive."""
        if os.path.getsize(local_path) == 0:
            raise ValueError(f"the file {local_path!r} is empty")
        if local_path.endswith((".tar.gz", ".tgz")):
            try:
                with tarfile.open(local_path, "r:gz") as archive:
                    # Walking the members decompresses the whole stream, so a truncated archive is caught.
                    members = sum(1 for _ in archive)
            except (tarfile.TarError, EOFError, OSError, zlib.error) as error:
                raise ValueError(f"the archive {local_path!r} is damaged or incomplete: {error}") from None
            if members == 0:
                raise ValueError(f"the archive {local_path!r} holds no files")


def _keras(name, path, input_shape, description):
    return PublishedModel(
        name=name,
        backend="keras",
        files=(path,),
        load_path=path,
        input_shape=input_shape,
        sha256={path: None},
        description=description,
    )


def _tflearn(name, prefix, input_shape, description):
    files = tuple(prefix + suffix for suffix in TFLEARN_CHECKPOINT_SUFFIXES)
    return PublishedModel(
        name=name,
        backend="tflearn",
        files=files,
        load_path=prefix,
        input_shape=input_shape,
        sha256={path: None for path in files},
        description=description,
    )


_SDSS = INPUT_SHAPES["SDSS"]
_CANDELS = INPUT_SHAPES["CANDELS"]
_DESCRIPTIONS = {
    "SDSS_sim": "SDSS g-band (z ~ 0), trained on simulations only",
    "SDSS_tl": "SDSS g-band (z ~ 0), trained on simulations, then transfer-learned on real galaxies",
    "CANDELS_sim": "CANDELS H-band (z ~ 1), trained on simulations only",
    "CANDELS_tl": "CANDELS H-band (z ~ 1), trained on simulations, then transfer-learned on real galaxies",
}

#: Every published model, one entry per (name, backend).
PUBLISHED_MODELS = (
    _keras("SDSS_sim", "gamornet_keras/trained_models/SDSS/sim_trained/model_sdss_sim_trained.h5", _SDSS,
           _DESCRIPTIONS["SDSS_sim"]),
    # "sdsss" (three s) is the file's real name on the server.
    _keras("SDSS_tl", "gamornet_keras/trained_models/SDSS/tl/model_sdsss_tl.hdf5", _SDSS,
           _DESCRIPTIONS["SDSS_tl"]),
    _keras("CANDELS_sim", "gamornet_keras/trained_models/CANDELS/sim_trained/model_candels_sim_trained.hdf5",
           _CANDELS, _DESCRIPTIONS["CANDELS_sim"]),
    _keras("CANDELS_tl", "gamornet_keras/trained_models/CANDELS/tl/model_candels_tl.hdf5", _CANDELS,
           _DESCRIPTIONS["CANDELS_tl"]),
    _tflearn("SDSS_sim", "gamornet/trained_models/SDSS/sim_trained/check-1405593", _SDSS,
             _DESCRIPTIONS["SDSS_sim"]),
    _tflearn("SDSS_tl", "gamornet/trained_models/SDSS/tl/check-1546293", _SDSS, _DESCRIPTIONS["SDSS_tl"]),
    _tflearn("CANDELS_sim", "gamornet/trained_models/CANDELS/sim_trained/check-562800", _CANDELS,
             _DESCRIPTIONS["CANDELS_sim"]),
    _tflearn("CANDELS_tl", "gamornet/trained_models/CANDELS/tl/check-571275", _CANDELS,
             _DESCRIPTIONS["CANDELS_tl"]),
)

#: The names accepted as ``model_load_path`` by both backends.
PUBLISHED_MODEL_NAMES = ("SDSS_sim", "SDSS_tl", "CANDELS_sim", "CANDELS_tl")

#: Tutorial data and prediction tables of the public data release.
PUBLISHED_FILES = (
    PublishedFile("predict_images", "gamornet_tutorial_files/predict_images/predict_images.tar.gz",
                  description="two SDSS galaxies for the prediction tutorial"),
    PublishedFile("training_images", "gamornet_tutorial_files/train_images/training_imgs.tar.gz",
                  description="simulated SDSS galaxies for the training tutorial"),
    PublishedFile("training_parameters", "gamornet_tutorial_files/train_images/sim_para.txt",
                  description="parameters of the simulated training galaxies"),
    PublishedFile("tl_images", "gamornet_tutorial_files/tl_images/tl_images.tar.gz",
                  description="real SDSS galaxies for the transfer-learning tutorial"),
    PublishedFile("tl_parameters", "gamornet_tutorial_files/tl_images/gal_para.txt",
                  description="parameters of the transfer-learning galaxies"),
    PublishedFile("pred_table_sdss_tflearn", "gamornet/pred_tables/pred_table_sdss.txt",
                  description="TFLearn predictions for ~100,000 SDSS galaxies"),
    PublishedFile("pred_table_candels_tflearn", "gamornet/pred_tables/pred_table_candels.txt",
                  description="TFLearn predictions for ~20,000 CANDELS galaxies"),
    PublishedFile("pred_table_sdss_keras", "gamornet_keras/pred_tables/pred_table_sdss.txt",
                  description="Keras predictions for ~100,000 SDSS galaxies"),
    PublishedFile("pred_table_candels_keras", "gamornet_keras/pred_tables/pred_table_candels.txt",
                  description="Keras predictions for ~20,000 CANDELS galaxies"),
)


def is_published_name(model_load_path):
    """Whether ``model_load_path`` is one of the published model names."""
    return isinstance(model_load_path, str) and model_load_path in PUBLISHED_MODEL_NAMES


def published_model(name, backend):
    """Return the registry entry of one published model.

    Raises
    ------
    ValueError
        An unknown name or backend.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}. Received: backend={backend!r}")
    for entry in PUBLISHED_MODELS:
        if entry.name == name and entry.backend == backend:
            return entry
    raise ValueError(
        f"model name must be one of {', '.join(map(repr, PUBLISHED_MODEL_NAMES))}. Received: {name!r}"
    )


def published_file(name):
    """Return the registry entry of one published data file.

    Raises
    ------
    ValueError
        An unknown name.
    """
    for entry in PUBLISHED_FILES:
        if entry.name == name:
            return entry
    known = ", ".join(repr(entry.name) for entry in PUBLISHED_FILES)
    raise ValueError(f"data file name must be one of {known}. Received: {name!r}")
