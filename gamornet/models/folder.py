"""A model folder: one trained model and everything that says how it must be used.

``gamornet train``, ``gamornet tl``, ``gamornet demo`` and
``gamornet_train_keras`` write one folder per model:

``trained_model.hdf5``
    The weights (Keras).
``model_card.json``
    What the model was trained on (:mod:`gamornet.models.card`).
``preprocessing.json``
    The preprocessing every image must get before the network sees it
    (:func:`gamornet.science.preprocess.preprocess_images`), or null.
``calibration.json`` (``gamornet calibrate --save``)
    A temperature fitted for these weights (:mod:`gamornet.science.calibration`).
``thresholds.json`` (``gamornet thresholds --save``)
    The class thresholds chosen for these weights (:mod:`gamornet.science.thresholds`).

``--model`` (and :func:`gamornet.load_predictor`) accept the folder or its
weights file: both name the same model, and ``gamornet predict`` applies what
the folder holds by default. A calibration or thresholds file records the
sha256 of the weights it was made for; once the weights change, the folder
refuses them (:class:`gamornet.errors.CalibrationMismatchError`).

Backend-neutral: imports neither TensorFlow nor tflearn.
"""

import json
import os

__all__ = ["CALIBRATION_FILE", "CARD_FILE_NAME", "PREPROCESSING_FILE", "THRESHOLDS_FILE", "WEIGHTS_FILE",
           "describe_applied", "describe_folder", "find_weights", "folder_input_shape", "folder_of", "read_preprocessing",
           "read_preprocessing_file", "saved_calibration", "saved_thresholds", "thresholds_sha256"]

#: The model card of a model folder (:mod:`gamornet.models.card`).
CARD_FILE_NAME = "model_card.json"
#: The weights of a model folder (Keras).
WEIGHTS_FILE = "trained_model.hdf5"
#: The preprocessing of a model folder.
PREPROCESSING_FILE = "preprocessing.json"
#: The calibration saved into a model folder by ``gamornet calibrate --save``.
CALIBRATION_FILE = "calibration.json"
#: The thresholds saved into a model folder by ``gamornet thresholds --save``.
THRESHOLDS_FILE = "thresholds.json"

#: The files that make a folder a model folder, besides the weights.
_MARKERS = (CARD_FILE_NAME, PREPROCESSING_FILE)


def find_weights(folder):
    """The weights file of a model folder.

    Raises
    ------
    FileNotFoundError
        The folder holds no ``trained_model.hdf5`` (the message lists what it holds).
    """
    path = os.path.join(os.fspath(folder), WEIGHTS_FILE)
    if os.path.isfile(path):
        return path
    held = sorted(name for name in os.listdir(folder) if name.endswith((".hdf5", ".h5")))
    hint = (f"; it holds {', '.join(held)}: give one of them as the model file" if held else
            "; a model folder is what gamornet train (or gamornet_train_keras) writes")
    raise FileNotFoundError(f"the model folder {os.fspath(folder)!r} holds no {WEIGHTS_FILE}{hint}")


def folder_of(model):
    """The model folder of a model given as a folder or as a file in one; None for a file in no model folder."""
    if not isinstance(model, (str, os.PathLike)):
        return None
    path = os.fspath(model)
    if os.path.isdir(path):
        return path
    folder = os.path.dirname(os.path.abspath(path))
    return folder if any(os.path.isfile(os.path.join(folder, name)) for name in _MARKERS) else None


#: What to do with a model card beside a model that cannot be read.
CORRUPT_CARD_ADVICE = (
    "This card beside the model was written by gamornet train with the model's training images' statistics: restore "
    "it from the training run (or regenerate it with gamornet.models.card.write_model_card on the training images), "
    "or move it out of the model's folder to predict without the out-of-domain check (the column out_of_domain is "
    "then not written)"
)


def _read_json(path):
    with open(path, encoding="utf-8") as stream:
        try:
            return json.load(stream)
        except json.JSONDecodeError as error:
            if os.path.basename(path) == CARD_FILE_NAME:
                raise ValueError(f"{path!r} is not a JSON model card: {error}. {CORRUPT_CARD_ADVICE}") from None
            raise ValueError(f"{path!r} is not valid JSON: {error}") from None


def read_preprocessing_file(path):
    """The preprocessing settings of a file: a ``preprocessing.json`` of a model folder, or the settings alone.

    Returns
    -------
    dict or None
        The checked settings of :func:`gamornet.science.preprocess.preprocessing_settings`,
        or None for a file that says the images are used as they are.

    Raises
    ------
    OSError
        The file cannot be read.
    ValueError
        Not JSON, or not preprocessing settings.
    """
    from gamornet.science.preprocess import preprocessing_settings

    path = os.fspath(path)
    document = _read_json(path)
    settings = document.get("preprocess_images", document) if isinstance(document, dict) else document
    if settings is None:
        return None
    if not isinstance(settings, dict):
        raise ValueError(f"{path!r} holds no preprocessing settings (a mapping of stretch, scaling, softening, "
                         f"border, subtract_background). Received: {settings!r}")  # fmt: skip
    try:
        return preprocessing_settings(**settings)
    except TypeError as error:
        raise ValueError(f"{path!r} holds settings that preprocess_images does not take: {error}") from None


def read_preprocessing(folder):
    """(settings or None, the file they come from or None) of a model folder.

    ``preprocessing.json`` if the folder has one, else the model card's
    ``preprocessing``; (None, None) when neither is there.
    """
    if folder is None:
        return None, None
    path = os.path.join(folder, PREPROCESSING_FILE)
    if os.path.isfile(path):
        return read_preprocessing_file(path), path
    card_path = os.path.join(folder, CARD_FILE_NAME)
    if os.path.isfile(card_path):
        settings = _read_json(card_path).get("preprocessing")
        if settings is not None:
            from gamornet.science.preprocess import preprocessing_settings

            return preprocessing_settings(**settings), card_path
    return None, None


def folder_input_shape(folder):
    """The input shape a model folder records (card, else preprocessing.json); None when it records none."""
    for name in _MARKERS:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            shape = _read_json(path).get("input_shape")
            if shape:
                return tuple(int(size) for size in shape)
    return None


def saved_calibration(folder):
    """The path of a model folder's ``calibration.json``, or None."""
    path = None if folder is None else os.path.join(folder, CALIBRATION_FILE)
    return path if path is not None and os.path.isfile(path) else None


def thresholds_sha256(path):
    """The sha256 of the weights a thresholds file was chosen for (``chosen_from.model_sha256``), or None."""
    chosen_from = _read_json(path).get("chosen_from") or {}
    return chosen_from.get("model_sha256") if isinstance(chosen_from, dict) else None


def saved_thresholds(folder, model_sha256):
    """(Thresholds, path) of a model folder's ``thresholds.json``, checked against the weights; (None, None) without.

    Raises
    ------
    gamornet.errors.CalibrationMismatchError
        The thresholds were chosen for other weights (a ``ValueError``).
    """
    path = None if folder is None else os.path.join(folder, THRESHOLDS_FILE)
    if path is None or not os.path.isfile(path):
        return None, None
    from gamornet.errors import CalibrationMismatchError
    from gamornet.science.thresholds import load_thresholds

    recorded = thresholds_sha256(path)
    if recorded is not None and recorded.lower() != model_sha256:
        raise CalibrationMismatchError(
            f"the thresholds {path!r} were chosen for other weights (sha256 {recorded[:16]}...), but the model's "
            f"weights now have sha256 {model_sha256[:16]}...: choose them again with `gamornet thresholds --save`, "
            "or give --thresholds"
        )
    return load_thresholds(path), path


def describe_applied(preprocessing, calibration, thresholds):
    """One line for people: what a prediction applies, each part with where it comes from.

    Parameters
    ----------
    preprocessing : (dict or None, str or None)
        The settings and their file (None: given, or none).
    calibration : (Calibration or None, str or None)
        The calibration and its file.
    thresholds : (str, str or None)
        The class rule in words and its file (None: given or a handbook default).
    """
    from gamornet.science.preprocess import describe_preprocessing

    def source(path):
        return f" (from {path})" if path else ""

    settings, settings_source = preprocessing
    temperature, temperature_source = calibration
    rule, rule_source = thresholds
    return "; ".join([
        f"preprocessing: {describe_preprocessing(settings)}{source(settings_source)}",
        "calibration: " + ("none" if temperature is None else
                           f"temperature T = {temperature.temperature:.4f}{source(temperature_source)}"),
        f"thresholds: {rule}{source(rule_source)}",
    ])  # fmt: skip


def describe_folder(resolved):
    """Lines for people: what a model folder holds (the weights, card, preprocessing, calibration, thresholds).

    A calibration or thresholds file made for other weights is named as refused.

    Parameters
    ----------
    resolved : gamornet.models.ResolvedModel
        A model resolved from a folder or a file (see :func:`gamornet.models.resolve_model`).

    Returns
    -------
    list of str
    """
    from gamornet.errors import CalibrationMismatchError
    from gamornet.science.calibration import load_calibration
    from gamornet.science.preprocess import describe_preprocessing

    lines = [f"model: {os.fspath(resolved.model)}",
             f"weights: {resolved.path} ({os.path.getsize(resolved.path)} bytes, sha256 {resolved.sha256})",
             f"input shape: {tuple(resolved.input_shape)}"]  # fmt: skip
    folder = resolved.folder
    if folder is None:
        return lines + ["no model folder (no model_card.json or preprocessing.json beside the weights)"]
    lines.append(f"folder: {folder}")
    card_path = os.path.join(folder, CARD_FILE_NAME)
    if os.path.isfile(card_path):
        card = _read_json(card_path)
        survey = f" of {card['survey']}" if card.get("survey") else ""
        lines.append(f"model card: {card_path} (trained by {card.get('trained_by')} on "
                     f"{card.get('n_training_images')} images{survey})")  # fmt: skip
        if card.get("training"):
            lines.append("training: " + ", ".join(f"{key} {value}" for key, value in card["training"].items()))
    settings, source = resolved.preprocessing
    lines.append(f"preprocessing: {describe_preprocessing(settings)}" + (f" (from {source})" if source else ""))
    saved = (("calibration", saved_calibration(folder)), ("thresholds", os.path.join(folder, THRESHOLDS_FILE)))
    for name, path in saved:
        if path is None or not os.path.isfile(path):
            lines.append(f"{name}: none saved (gamornet {'calibrate' if name == 'calibration' else name} --save)")
            continue
        try:
            if name == "calibration":
                detail = f"temperature T = {load_calibration(path, resolved.sha256).temperature:.4f}"
            else:
                rule, _ = saved_thresholds(folder, resolved.sha256)
                detail = f"p_disk >= {rule.disk}, p_bulge >= {rule.bulge}" + (
                    ", p_disk leading" if rule.disk_must_lead else "")
        except CalibrationMismatchError:
            detail = "REFUSED: made for other weights (their sha256 differs); make it again with --save"
        lines.append(f"{name}: {detail} ({path})")
    return lines
