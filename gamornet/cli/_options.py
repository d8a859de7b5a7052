"""What several subcommands parse the same way: the input shape, thresholds, the model and the predictor's options.

One parser per option, so that ``gamornet predict`` (in one process or on a
cluster), ``gamornet cutouts`` and ``gamornet train`` accept the same spellings
and give the same messages.
"""

from gamornet import models
from gamornet._utils import checks as _checks
from gamornet.presets import INPUT_SHAPES
from gamornet.science.classify import HANDBOOK_THRESHOLDS, default_thresholds
from gamornet.science.classify import resolve_thresholds as _thresholds_from_values

__all__ = ["applied_line", "parse_input_shape", "parse_thresholds", "predictor_options", "read_calibration_images",
           "resolve_model", "resolve_thresholds"]


def parse_input_shape(text):
    """--input-shape: a preset name, or a checked (x, y, ndim); None when not given."""
    if text is None:
        return None
    if text in INPUT_SHAPES:
        return text
    parts = text.replace("(", "").replace(")", "").split(",")
    try:
        shape = tuple(int(part) for part in parts)
    except ValueError:
        shape = None
    if shape is None or len(shape) != 3:
        raise ValueError(
            f"--input-shape must be SDSS, CANDELS or three integers X,Y,NDIM (such as 64,64,1). Received: {text!r}"
        )
    return _checks.check_input_shape(shape)


def parse_thresholds(text):
    """--thresholds: a handbook set's name, a thresholds file, or P_DISK,P_BULGE[,lead]; None when not given."""
    if text is None:
        return None
    if text in HANDBOOK_THRESHOLDS:
        return text
    if text.lower().endswith(".json"):
        from gamornet.science.thresholds import load_thresholds

        return load_thresholds(text)
    parts = [part.strip() for part in text.split(",")]
    lead = len(parts) == 3 and parts[2].lower() == "lead"
    try:
        if len(parts) not in (2, 3) or (len(parts) == 3 and not lead):
            raise ValueError
        values = (float(parts[0]), float(parts[1]))
    except ValueError:
        raise ValueError(
            "--thresholds must be one of " + ", ".join(HANDBOOK_THRESHOLDS)
            + f", or P_DISK,P_BULGE (such as 0.7,0.7), or P_DISK,P_BULGE,lead. Received: {text!r}"
        ) from None
    return _thresholds_from_values(values + ((True,) if lead else ()))


def resolve_model(args):
    """The :class:`gamornet.models.ResolvedModel` of --model, --backend and --input-shape (nothing fetched yet)."""
    shape_option = parse_input_shape(args.input_shape)
    if models.is_published_name(args.model):
        entry = models.published_model(args.model, args.backend)
        if shape_option is not None and _checks.check_input_shape(shape_option) != tuple(entry.input_shape):
            raise ValueError(
                f"the published model {args.model!r} takes images of shape {tuple(entry.input_shape)}, but "
                f"--input-shape is {_checks.check_input_shape(shape_option)}; leave --input-shape out"
            )
    elif shape_option is None:
        try:
            return models.resolve_model(args.model, args.backend)  # a model folder's card records the shape
        except ValueError:
            raise ValueError(
                f"--input-shape is needed with a model file ({args.model!r}): SDSS, CANDELS or X,Y,NDIM. "
                "(Published models, such as SDSS_tl, and model folders with a model card know their input shape.)"
            ) from None
    return models.resolve_model(args.model, args.backend, shape_option)


def resolve_thresholds(args, resolved):
    """The class rule of --thresholds, else the model folder's thresholds (``gamornet thresholds --save``), else the
    handbook set of the model's backend and data set."""
    thresholds = parse_thresholds(args.thresholds)
    if thresholds is not None:
        return thresholds
    saved, _ = resolved.thresholds
    if saved is not None:
        return saved
    return default_thresholds(args.backend, resolved.data_set, resolved.input_shape,
                              "--thresholds P_DISK,P_BULGE (such as 0.7,0.7)")


def read_calibration_images(args, input_shape, exclude=()):
    """The first images of --calibration-images (None without it); only int8 takes them."""
    if args.calibration_images is None:
        return None
    if args.precision != "int8":
        raise ValueError(
            "--calibration-images calibrates the int8 quantization: give it with --precision int8. "
            f"Received --precision {args.precision}"
        )
    from gamornet.io.images import ImageReader
    from gamornet.inference.int8 import DEFAULT_CALIBRATION_SIZE

    reader = ImageReader([args.calibration_images], input_shape, batch_size=DEFAULT_CALIBRATION_SIZE, hdu=args.hdu,
                         exclude=exclude)  # fmt: skip
    for batch in reader:
        if batch.bad:
            raise ValueError(f"--calibration-images: {batch.bad[0]}")
        if len(batch.images):
            return batch.images
    raise ValueError(f"--calibration-images {args.calibration_images!r} holds no images")


def _model_or_file(value, option):
    """--preprocessing / --calibration: 'model' when not given, None for 'none', else a file that must exist."""
    if value is None:
        return "model"
    if value.lower() == "none":
        return None
    import os

    if not os.path.isfile(value):
        raise FileNotFoundError(f"{option}: no file {value!r}; give 'none', or a JSON file (leave {option} out to "
                                "apply what the model folder holds)")  # fmt: skip
    return value


def predictor_options(args, input_shape, exclude=()):
    """The options of :func:`gamornet.load_predictor` that the command line sets, checked."""
    mc_samples = _checks.check_positive_int(args.mc_samples, "--mc-samples", allow_zero=True)
    if mc_samples:
        from gamornet.inference.mc_dropout import check_n_samples

        mc_samples = check_n_samples(mc_samples, "--mc-samples")
    if args.seed is not None and args.seed < 0:
        raise ValueError(f"--seed must be an integer >= 0. Received: --seed={args.seed}")
    return {"mc_samples": mc_samples, "seed": args.seed, "precision": args.precision,
            "calibration_images": read_calibration_images(args, input_shape, exclude),
            "calibration": _model_or_file(args.calibration, "--calibration"),
            "preprocessing": _model_or_file(getattr(args, "preprocessing", None), "--preprocessing"),
            "model_card": "auto"}


def applied_line(args, predictor, thresholds):
    """What ``gamornet predict`` applies, in one line (preprocessing, calibration, thresholds, each with its file)."""
    from gamornet.inference.pipeline import describe_thresholds
    from gamornet.models.folder import describe_applied

    sources = predictor.sources
    thresholds_source = sources["thresholds"] if args.thresholds is None else None
    return "gamornet predict: applies " + describe_applied(
        (predictor.preprocessing, sources["preprocessing"]), (predictor.calibration, sources["calibration"]),
        (describe_thresholds(thresholds), thresholds_source))
