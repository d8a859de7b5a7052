"""The published GaMorNet models and data files, kept as data.

Backend-neutral: imports neither TensorFlow nor tflearn. Builders never hold
URLs; the downloader (``gamornet._download``) and the CLI read this table.
Paths are relative to the public data release's base URL, ``DEFAULT_BASE_URL``.
"""

from dataclasses import dataclass, field

from gamornet.presets import INPUT_SHAPES

#: The public data release of Ghosh et al. (2020): anonymous FTP at Yale.
DEFAULT_BASE_URL = "ftp://ftp.astro.yale.edu/pub/aghosh/"

CITATION = (
    "Ghosh, A., Urry, C. M., Wang, Z., et al. 2020, ApJ, 895, 112, doi:10.3847/1538-4357/ab8a47"
)

#: Files of one TFLearn checkpoint, appended to its prefix.
TFLEARN_CHECKPOINT_SUFFIXES = (".data-00000-of-00001", ".index", ".meta")

BACKENDS = ("keras", "tflearn")

#: The (weight, bias) variables of the 8 weighted layers in the published
#: TFLearn checkpoints, in network order (TFLearn's default scope names). Their
#: shapes are those of ``gamornet.presets.weight_shapes``.
TFLEARN_WEIGHT_VARIABLES = tuple(
    (f"{scope}/W", f"{scope}/b")
    for scope in ("Conv2D", "Conv2D_1", "Conv2D_2", "Conv2D_3", "Conv2D_4",
                  "FullyConnected", "FullyConnected_1", "FullyConnected_2")
)


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


@dataclass(frozen=True)
class PublishedFile:
    """One published data file (tutorial data, prediction tables)."""

    name: str
    path: str
    sha256: str = None
    description: str = ""
    citation: str = CITATION


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
