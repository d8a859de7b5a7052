"""``gamornet predict``: classify a catalogue of galaxy images into a table.

One row per image: its source (the FITS file, ``cube.fits[12]`` for plane 12
of a cube, ``images.npy[12]`` for image 12 of an array), the probabilities
p_disk, p_indet and p_bulge, and the class (disk, indeterminate or bulge).

Images are streamed in batches (see :mod:`gamornet.io.images`), read in a background
thread while the network works on the previous batch, so memory does not grow
with the number of images. CSV rows are written as they are computed, into a
temporary file renamed into place at the end; FITS tables are written at the
end (their rows, a few dozen bytes each, are kept in memory until then).

With ``--catalog`` and ``--images`` the stamps are cut from survey images at
the RA/Dec of each catalogue row instead (:mod:`gamornet.survey.cutouts`), in the
reader thread, and the table has one row per catalogue row: its id, RA and
Dec, the probabilities and class (empty for a row off the images), and the
quality flags of its stamp.

A bad input (unreadable file, image of the wrong shape, NaN or infinite
pixels) stops the run with an error that names it, unless ``--skip-bad`` is
given, in which case the run goes on and lists the bad inputs at the end.
When a run stops early, the rows computed so far are kept, in
``<output>.partial.csv`` (or ``.partial.fits``) beside the output.
"""

import argparse
import os
import sys

import numpy as np

from gamornet._utils import checks as _checks
from gamornet.cli import distributed as _cli_distributed
from gamornet.models import _registry
from gamornet._utils.atomic import atomic_path, remove_stale_temporaries
from gamornet.cli.cutouts import add_survey_arguments, survey_reader
from gamornet.io.tables import BASE_COLUMNS, CsvTable, FitsTable
from gamornet.errors import BadInputError
from gamornet.science.classify import HANDBOOK_THRESHOLDS, classify, default_threshold_set, resolve_thresholds
from gamornet.inference.predictor import load_predictor
from gamornet.presets import INPUT_SHAPES

COLUMNS = BASE_COLUMNS
_CSV_ENDINGS = (".csv",)
_FITS_ENDINGS = (".fits", ".fit", ".fits.gz", ".fit.gz")

_DESCRIPTION = """\
Classify galaxy images as disk-dominated, indeterminate or bulge-dominated, and
write one row per image: source, p_disk, p_indet, p_bulge, class.

INPUT may be FITS files, folders of FITS files, glob patterns (quote them:
'cutouts/*.fits'), FITS cubes (one image per plane) or .npy arrays of shape
(n, x, y) or (n, x, y, ndim), or a range of the images of a cube or an array
('stack.npy[0:4096]'). Images are streamed in batches: memory does not grow
with their number.

Or, instead of INPUT, a catalogue and survey images: --catalog cat.fits
--images 'tiles/*.fits'. A stamp of the network's input size is then cut at
each row's RA/Dec (resampled to the network's pixel scale when the images'
differs), and the table has one row per catalogue row: its id, RA and Dec, the
probabilities and class (empty when the row is off the images), and the flags
off_image, partial, fraction_present, nan_fraction and tile (see `gamornet
cutouts --help`). Needs reproject: pip install 'gamornet[survey]'.

Classes use the handbook's probability thresholds. By default the set is the
one of the backend and data set: keras_SDSS, keras_CANDELS, tflearn_SDSS or
tflearn_CANDELS, from the published model name (SDSS_tl ...) or from
--input-shape SDSS / CANDELS. For any other input shape, give --thresholds.

A model trained by gamornet has a model card (model_card.json) beside it: then
each image is also checked against the card's central 99% range of its
training images (background level, border noise, peak S/N, size and
concentration), the column out_of_domain names the statistics that fall
outside it, and the share of such images is printed at the end.
"""

_EPILOG = """\
threshold sets (the Public Data Release Handbook; "else indeterminate"):
  keras_SDSS       disk if p_disk >= 0.70; bulge if p_bulge >= 0.70
  keras_CANDELS    disk if p_disk > p_bulge and p_disk > p_indet; bulge if p_bulge >= 0.60
  tflearn_SDSS     disk if p_disk >= 0.80; bulge if p_bulge >= 0.80
  tflearn_CANDELS  disk if p_disk > p_bulge, p_disk > p_indet and p_disk >= 0.36; bulge if p_bulge >= 0.55
  P_DISK,P_BULGE   your own: disk if p_disk >= P_DISK; bulge if p_bulge >= P_BULGE
  P_DISK,P_BULGE,lead   also require p_disk > p_bulge and p_disk > p_indet for a disk

bad inputs (unreadable files, images of the wrong shape, NaN or infinite pixels):
  by default the run stops with an error naming the input; the rows computed
  before it are kept in OUTPUT.partial.csv (or .partial.fits). With --skip-bad
  the run goes on and lists the bad inputs at the end. Images with one value in
  every pixel (blank or saturated) are classified but named at the end: their
  probabilities say nothing about a galaxy.

stopping a run (Ctrl-C, or SIGTERM as sent by Slurm and `timeout`):
  the rows computed so far are kept in OUTPUT.partial.csv (or .partial.fits);
  the exit status is 130 (Ctrl-C) or 143 (SIGTERM). A later successful run
  removes the partial file and any temporary file a killed run left behind.

examples:
  gamornet predict cutouts/ --model SDSS_tl --output sdss.csv
  gamornet predict 'field*/*.fits' --model CANDELS_tl --backend tflearn --output candels.fits --skip-bad
  gamornet predict stack.npy --model my_model.hdf5 --input-shape 64,64,2 --thresholds 0.6,0.6
  gamornet predict --catalog galaxies.fits --images 'tiles/*.fits' --model SDSS_tl --output sdss.csv
"""


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "predict",
        help="classify galaxy images (FITS files, folders, cubes, .npy) into a CSV or FITS table",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("inputs", nargs="*", metavar="INPUT",
                        help="FITS files, folders, glob patterns or .npy files (or give --catalog and --images)")
    parser.add_argument(
        "--model", required=True, metavar="NAME_OR_PATH",
        help="a published model (SDSS_sim, SDSS_tl, CANDELS_sim, CANDELS_tl) or a model file: a Keras .hdf5 "
             "file, or a TFLearn checkpoint prefix",
    )
    parser.add_argument("--backend", choices=_registry.BACKENDS, default="keras", help="default: keras")
    parser.add_argument(
        "--input-shape", metavar="SDSS|CANDELS|X,Y,NDIM",
        help="the network's input shape; default: that of the published model (required with a model file)",
    )
    parser.add_argument("--batch-size", type=int, default=64, metavar="N", help="images per batch (default: 64)")
    parser.add_argument(
        "--thresholds", metavar="SET|P_DISK,P_BULGE[,lead]|FILE.json",
        help="a handbook set (" + ", ".join(HANDBOOK_THRESHOLDS) + "), your own thresholds, or a file written "
             "by `gamornet thresholds --output`; default: the handbook set of the backend and data set",
    )
    parser.add_argument("--hdu", type=int, metavar="N",
                        help="FITS HDU holding the image (default: the first with data)")
    parser.add_argument(
        "--output", metavar="FILE.csv|FILE.fits|DIR.parquet",
        help="the table to write (CSV or FITS, by its ending; with --workers or --scheduler, also a Parquet "
             "folder); default: CSV on standard output",
    )
    parser.add_argument("--skip-bad", action="store_true", help="skip bad inputs and list them at the end")
    parser.add_argument("--no-progress", action="store_true", help="do not show the progress bar")
    _add_predictor_arguments(parser)
    add_survey_arguments(parser, required=False)
    _cli_distributed.add_options(parser)
    parser.set_defaults(command_name="predict", handler=run)
    return parser


def _add_predictor_arguments(parser):
    """The options of the predictor itself: calibration, MC dropout, precision."""
    parser.add_argument(
        "--calibration", metavar="FILE.json",
        help="a temperature fitted for this model by `gamornet calibrate`, applied to every probability; a "
             "calibration fitted for another model is refused",
    )
    parser.add_argument(
        "--mc-samples", type=int, default=0, metavar="N",
        help="MC dropout: predict each image N times with dropout on; the probabilities are the mean, and the "
             "columns p_disk_std, p_indet_std, p_bulge_std, entropy, mutual_information are added (default: 0, off)",
    )
    parser.add_argument("--seed", type=int, metavar="N",
                        help="seed of the MC-dropout masks (same seed and batches: same numbers)")
    parser.add_argument(
        "--precision", choices=("fp32", "bf16", "int8"), default="fp32",
        help="arithmetic of the network: fp32 (default, as trained); bf16 or int8, faster on CPUs with "
             "AVX512-BF16 / VNNI at the price of a few changed classes (see the Speed page of the docs); "
             'int8 needs pip install "gamornet[fast]"',
    )  # fmt: skip
    parser.add_argument(
        "--calibration-images", metavar="INPUT",
        help="with --precision int8: images to calibrate the quantization on (a .npy file, a FITS file or cube, "
             "a folder or a quoted glob pattern; its first 300 images are used), like the inputs and "
             "preprocessed the same way; default: the first 300 images of the inputs",
    )  # fmt: skip


# --------------------------------------------------------------------------- options


def _parse_input_shape(text):
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


def _parse_thresholds(text):
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
    return resolve_thresholds(values + ((True,) if lead else ()))


def _data_set(shape_option):
    """'SDSS' / 'CANDELS' when the input shape is a preset (by name or by value), else None."""
    if shape_option in INPUT_SHAPES:
        return shape_option
    for name, shape in INPUT_SHAPES.items():
        if shape_option == shape:
            return name
    return None


def _resolve_model(args):
    """(input shape, data set name or None) from --model, --backend and --input-shape."""
    shape_option = _parse_input_shape(args.input_shape)
    if _registry.is_published_name(args.model):
        entry = _registry.published_model(args.model, args.backend)
        if shape_option is not None and _checks.check_input_shape(shape_option) != tuple(entry.input_shape):
            raise ValueError(
                f"the published model {args.model!r} takes images of shape {tuple(entry.input_shape)}, but "
                f"--input-shape is {_checks.check_input_shape(shape_option)}; leave --input-shape out"
            )
        return tuple(entry.input_shape), args.model.split("_")[0]
    if shape_option is None:
        raise ValueError(
            f"--input-shape is needed with a model file ({args.model!r}): SDSS, CANDELS or X,Y,NDIM. "
            "(Published models, such as SDSS_tl, know their input shape.)"
        )
    return _checks.check_input_shape(shape_option), _data_set(shape_option)


def _output_format(output):
    if output is None:
        return "csv"
    lower = output.lower()
    if lower.endswith(_CSV_ENDINGS):
        kind = "csv"
    elif lower.endswith(_FITS_ENDINGS):
        kind = "fits"
    else:
        raise ValueError(
            f"--output must end in .csv (a CSV table) or .fits (a FITS table). Received: {output!r}"
        )
    if os.path.isdir(output):
        raise IsADirectoryError(f"--output {output!r} is a folder; give a file name such as {output!r}/predictions.csv")
    folder = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"--output: the folder {folder!r} does not exist")
    return kind


def partial_path(output):
    """Where the rows of an interrupted run are kept: ``<name>.partial<ending>``."""
    lower = output.lower()
    for ending in sorted(_CSV_ENDINGS + _FITS_ENDINGS, key=len, reverse=True):
        if lower.endswith(ending):
            return output[: -len(ending)] + ".partial" + output[-len(ending):]
    return output + ".partial"


# --------------------------------------------------------------------------- the run


def _stop_message(bad, rows, kept):
    if rows == 0:
        done = "No image had been classified before it."
    elif kept is None:
        done = f"The {rows} rows written to standard output before it are complete."
    else:
        done = f"The {rows} images classified before it are saved in {kept!r}."
    return (
        f"cannot classify {bad.source!r}: {bad.reason}. {done} Fix or remove this input, or add --skip-bad to "
        "skip bad inputs and list them at the end"
    )


def _describe_thresholds(thresholds):
    if isinstance(thresholds, str):
        return thresholds
    return f"p_disk >= {thresholds.disk}, p_bulge >= {thresholds.bulge}" + (
        ", p_disk leading" if thresholds.disk_must_lead else ""
    )


class _Outcome:
    """What a run met besides its rows: bad inputs, images with one value in every pixel, rows without one, and
    out-of-domain images."""

    def __init__(self):
        self.bad_inputs = []
        self.blank_sources = []
        self.without_image = 0
        self.out_of_domain = None  # with a model card to check against: {statistic: images}, and "any"
        self.refined = None  # bf16: {"predicted", "refined", "margin"}

    def count_out_of_domain(self, failed):
        counts = self.out_of_domain if self.out_of_domain is not None else {"any": 0}
        for entry in failed:
            if entry:
                counts["any"] += 1
                for name in entry.split(";"):
                    counts[name] = counts.get(name, 0) + 1
        self.out_of_domain = counts


def _batch_rows(batch, result, classes, key_column, predictor_columns):
    """(sources, probabilities, classes, columns) of the rows of a batch, in input order: its images, and the
    rows without an image (catalogue rows off the survey images), with empty probabilities and class."""
    columns = dict(batch.columns)
    columns.update({name: result.columns[name] for name in predictor_columns})
    sources = columns[key_column] if key_column in columns else batch.sources
    if not batch.missing:
        return sources, result.probabilities, classes, columns
    order = list(batch.in_order())
    rows = {"sources": [], "probabilities": [], "classes": []}
    merged = {name: [] for name in columns}
    empty = (np.nan, np.nan, np.nan)
    for item in order:
        if isinstance(item, int):
            rows["sources"].append(sources[item])
            rows["probabilities"].append(result.probabilities[item])
            rows["classes"].append(classes[item])
            for name, values in columns.items():
                merged[name].append(values[item])
        else:
            rows["sources"].append(item.columns.get(key_column, item.source))
            rows["probabilities"].append(empty)
            rows["classes"].append("")
            for name in columns:
                merged[name].append(item.columns.get(name, np.nan))
    merged = {name: np.asarray(values) for name, values in merged.items()}
    return rows["sources"], np.asarray(rows["probabilities"], dtype=np.float32), rows["classes"], merged


def _classify_stream(reader, predictor, thresholds, table, progress, outcome):
    """Predict and classify every batch of ``reader`` into ``table`` through the predictor's batch loop."""
    from gamornet._utils.progress import progress_bar

    done = 0
    with progress_bar(reader.total, "Classifying", enabled=progress) as bar:
        for batch, result in predictor.stream(reader):
            if len(batch.sources) or batch.missing:
                classes = classify(result.probabilities, thresholds)
                table.add(*_batch_rows(batch, result, classes, table.key_columns[0], predictor.columns))
                outcome.blank_sources += [source for source, blank in zip(batch.sources, result.blank) if blank]
                outcome.without_image += len(batch.missing)
                if "out_of_domain" in result.columns:
                    outcome.count_out_of_domain(result.columns["out_of_domain"])
            outcome.bad_inputs.extend(batch.bad)
            done += len(batch.sources) + len(batch.bad) + len(batch.missing)
            if progress:
                bar.max_value = max(reader.total, done)
            bar.update(done)
            if batch.bad and not reader.skip_bad:
                raise BadInputError(batch.bad[0])


def _keep_partial(table, kind, output, temporary):
    """Save the rows of a stopped run beside ``output``; return where, or None."""
    if table.rows == 0 or output is None:
        return None
    kept = partial_path(output)
    if kind == "csv":
        table.stream.close()
        os.replace(temporary, kept)
    else:
        table.write(kept)
    return kept


def _run_into(reader, predictor, thresholds, table, kind, output, temporary, progress, outcome):
    try:
        _classify_stream(reader, predictor, thresholds, table, progress, outcome)
    except BadInputError as stop:
        kept = _keep_partial(table, kind, output, temporary)
        raise BadInputError(_stop_message(stop.args[0], table.rows, kept)) from None
    except BaseException as error:
        kept = _keep_partial(table, kind, output, temporary)
        if kept is not None:
            error.kept = f"the {table.rows} images classified before the stop are saved in {kept!r}"
        elif output is not None:
            error.kept = f"no image had been classified; nothing was written to {output!r}"
        raise


def _own_files(output):
    """The files a run writes, which it must never read as inputs."""
    return () if output is None else (output, partial_path(output))


def _refuse_overwriting_inputs(reader, output):
    if output is None:
        return
    target = os.path.realpath(output)
    for _, path in reader.entries:
        if os.path.realpath(path) == target:
            raise ValueError(
                f"--output {output!r} is one of the inputs: writing the table there would destroy it. Give another "
                "file name for the table"
            )


def _open_survey_reader(args, input_shape, batch_size):
    """The :class:`gamornet.survey.cutouts.CutoutReader` of --catalog and --images."""
    if args.inputs:
        raise ValueError(
            "give either images to classify (INPUT) or a catalogue with --catalog and --images, not both. Received "
            f"the inputs {', '.join(map(repr, args.inputs[:3]))}{' ...' if len(args.inputs) > 3 else ''} and "
            f"--catalog {args.catalog!r}"
        )
    if args.catalog is None or args.images is None:
        given, missing = ("--catalog", "--images") if args.images is None else ("--images", "--catalog")
        raise ValueError(f"{given} needs {missing}: give the catalogue (--catalog) and the survey images (--images)")
    reader = survey_reader(args, input_shape, batch_size, exclude=_own_files(args.output))
    _refuse_overwriting_inputs(reader, args.output)
    if reader.total == 0:
        raise ValueError(f"the catalogue {args.catalog!r} has no rows")
    return reader


def _open_reader(args, input_shape, batch_size):
    from gamornet.io.images import ImageReader

    if args.catalog is not None or args.images is not None:
        return _open_survey_reader(args, input_shape, batch_size)
    if not args.inputs:
        raise ValueError(
            "give the images to classify (FITS files, folders, glob patterns or .npy files), or a catalogue and "
            "survey images with --catalog and --images"
        )
    _checks.check_hdu(args.hdu, "--hdu")
    reader = ImageReader(args.inputs, input_shape, batch_size=batch_size, hdu=args.hdu, skip_bad=args.skip_bad,
                         exclude=_own_files(args.output))
    _refuse_overwriting_inputs(reader, args.output)
    if reader.total == 0:
        names = ", ".join(repr(path) for _, path in reader.entries)
        raise ValueError(f"the inputs hold no images: {names} hold 0 images")
    return reader


def _resolve_thresholds(args, input_shape, data_set):
    thresholds = _parse_thresholds(args.thresholds)
    if thresholds is not None:
        return thresholds
    if data_set is None:
        raise ValueError(
            f"no handbook threshold set fits the input shape {input_shape}: they exist for SDSS "
            "(167, 167, 1) and CANDELS (83, 83, 1). Give --thresholds P_DISK,P_BULGE (such as 0.7,0.7) "
            "or a set name (" + ", ".join(HANDBOOK_THRESHOLDS) + ")"
        )
    return default_threshold_set(args.backend, data_set)


def _table_columns(reader, predictor):
    """(key columns, extra columns) of the table: 'source' for files of images; a catalogue's id, RA and Dec, then
    the flags, for survey images."""
    key_columns = tuple(getattr(reader, "key_columns", BASE_COLUMNS[:1]))
    extra_columns = tuple(getattr(reader, "extra_columns", ())) + tuple(predictor.columns)
    clash = set(key_columns) & set(BASE_COLUMNS[1:] + extra_columns)
    if clash:
        raise ValueError(f"the catalogue's column {sorted(clash)[0]!r} has the name of a column of the predictions "
                         f"({', '.join(BASE_COLUMNS[1:] + extra_columns)}); rename it, or name another id column")
    return key_columns, extra_columns


def _fits_meta(predictor, thresholds):
    meta = {"MODEL": str(predictor.model)[-68:], "MODELSHA": predictor.model_sha256, "BACKEND": predictor.backend,
            "THRESH": _describe_thresholds(thresholds)[:68], "PRECISN": predictor.precision}
    if predictor.calibration is not None:
        meta["CALIBT"] = predictor.calibration.temperature
    return meta


def _read_calibration_images(args, input_shape):
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
                         exclude=_own_files(args.output))  # fmt: skip
    for batch in reader:
        if batch.bad:
            raise ValueError(f"--calibration-images: {batch.bad[0]}")
        if len(batch.images):
            return batch.images
    raise ValueError(f"--calibration-images {args.calibration_images!r} holds no images")


def _predictor_options(args, input_shape):
    """The options of :func:`gamornet.load_predictor` that the command line sets, checked."""
    mc_samples = _checks.check_positive_int(args.mc_samples, "--mc-samples", allow_zero=True)
    if args.seed is not None and args.seed < 0:
        raise ValueError(f"--seed must be an integer >= 0. Received: --seed={args.seed}")
    return {"mc_samples": mc_samples, "seed": args.seed, "precision": args.precision,
            "calibration_images": _read_calibration_images(args, input_shape), "calibration": args.calibration,
            "model_card": "auto"}


def _write_table(args, reader, predictor, thresholds, kind, outcome):
    """Classify everything ``reader`` yields into the table of --output (or standard output); return the table."""
    progress = not args.no_progress
    key_columns, extra_columns = _table_columns(reader, predictor)
    if args.output is None:
        table = CsvTable(sys.stdout, extra_columns, key_columns)
        _run_into(reader, predictor, thresholds, table, kind, None, None, progress, outcome)
    elif kind == "csv":
        with atomic_path(args.output, suffix=".csv") as temporary:
            with open(temporary, "w", newline="", encoding="utf-8") as stream:
                table = CsvTable(stream, extra_columns, key_columns)
                _run_into(reader, predictor, thresholds, table, kind, args.output, temporary, progress, outcome)
    else:
        table = FitsTable(_fits_meta(predictor, thresholds), extra_columns, key_columns)
        _run_into(reader, predictor, thresholds, table, kind, args.output, None, progress, outcome)
        table.write(args.output)
    return table


def run(args):
    """Run ``gamornet predict``; return the exit status."""
    if _cli_distributed.wanted(args):
        return _cli_distributed.run(args)
    _cli_distributed.refuse_without_cluster(args)
    input_shape, data_set = _resolve_model(args)
    thresholds = _resolve_thresholds(args, input_shape, data_set)
    batch_size = _checks.check_positive_int(args.batch_size, "--batch-size")
    kind = _output_format(args.output)
    reader = _open_reader(args, input_shape, batch_size)
    if not _registry.is_published_name(args.model) and args.backend == "keras":
        _checks.check_model_file(args.model, "--model")
    options = dict(_predictor_options(args, input_shape), thresholds=thresholds)  # bf16 refines near their boundaries
    if args.output is not None:
        for path in _own_files(args.output):
            remove_stale_temporaries(path)
    outcome = _Outcome()
    with load_predictor(args.model, input_shape, args.backend, **options) as predictor:
        table = _write_table(args, reader, predictor, thresholds, kind, outcome)
        if predictor.precision == "bf16":
            outcome.refined = dict(predictor.engine.counts, margin=predictor.engine.refinement.margin)
    if args.output is not None and os.path.exists(partial_path(args.output)):
        # The partial rows of an earlier, stopped run are superseded by this complete table.
        os.remove(partial_path(args.output))
    _report(table, outcome, args.output, thresholds)
    return 0


def _listing(items, limit=20):
    lines = [f"  {item}" for item in items[:limit]]
    if len(items) > limit:
        lines.append(f"  ... and {len(items) - limit} more")
    return lines


def _report(table, outcome, output, thresholds):
    where = "standard output" if output is None else repr(output)
    lines = [f"gamornet predict: classified {table.rows - outcome.without_image} images with the thresholds "
             f"{_describe_thresholds(thresholds)}; the table is in {where}"]
    if outcome.without_image:
        count = outcome.without_image
        lines.append(f"gamornet predict: {count} catalogue row{'s' if count > 1 else ''} had no stamp (off the "
                     "images, or no finite pixel): their probabilities and class are empty in the table")
    if outcome.blank_sources:
        count = len(outcome.blank_sources)
        lines.append(f"gamornet predict: warning: {count} image{'s' if count > 1 else ''} had the same value in every "
                     "pixel (blank, or saturated everywhere): their probabilities say nothing about a galaxy:")
        lines += _listing(outcome.blank_sources)
    classified = table.rows - outcome.without_image
    if outcome.out_of_domain is not None and classified:
        counts = dict(outcome.out_of_domain)
        share = counts.pop("any") / classified
        by_name = "".join(f", {name} {count / classified:.1%}" for name, count in counts.items())
        lines.append(f"gamornet predict: {share:.1%} of the images lie outside the model card's central 99% range of "
                     f"the training images (the column out_of_domain names the statistics{by_name})")  # fmt: skip
    if outcome.refined is not None and outcome.refined["predicted"]:
        refined, predicted = outcome.refined["refined"], outcome.refined["predicted"]
        lines.append(f"gamornet predict: bf16: {refined} of {predicted} images ({refined / predicted:.1%}), whose "
                     f"class was decided by less than {outcome.refined['margin']:g} in probability, were predicted "
                     "again in fp32 and keep fp32's probabilities")  # fmt: skip
    if outcome.bad_inputs:
        plural = "s" if len(outcome.bad_inputs) > 1 else ""
        lines.append(f"gamornet predict: skipped {len(outcome.bad_inputs)} bad input{plural}:")
        lines += _listing([str(bad) for bad in outcome.bad_inputs], limit=len(outcome.bad_inputs))
    print("\n".join(lines), file=sys.stderr)
