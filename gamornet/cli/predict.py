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

from gamornet import models
from gamornet._utils import checks as _checks
from gamornet._utils.atomic import atomic_path, remove_stale_temporaries
from gamornet.cli import distributed as _cli_distributed
from gamornet.cli._options import applied_line, predictor_options, resolve_model, resolve_thresholds
from gamornet.cli.cutouts import add_survey_arguments, bad_rows_lines, survey_reader
from gamornet.errors import BadInputError
from gamornet.inference.pipeline import Outcome, classify_stream, describe_thresholds, report_lines
from gamornet.inference.predictor import load_predictor
from gamornet.io.tables import BASE_COLUMNS, CsvTable, FitsTable
from gamornet.science.classify import HANDBOOK_THRESHOLDS

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
off_image, partial, fraction_present, nan_fraction, tile and bad_coordinates
(see `gamornet cutouts --help`); with --skip-bad, a row with unusable RA/Dec is
kept, without a stamp, flagged bad_coordinates. Needs reproject: pip install 'gamornet[survey]'.

A model folder (what gamornet train writes: trained_model.hdf5 with
model_card.json and preprocessing.json beside it, and the calibration.json and
thresholds.json that `gamornet calibrate --save` and `gamornet thresholds
--save` add) is used as a whole, whether --model names the folder or its
trained_model.hdf5: by default every image gets the folder's preprocessing
before the network sees it (so give the images raw, as the survey delivers
them), the probabilities get its calibration, and the classes its thresholds.
The run prints what it applied; --preprocessing none, --calibration none and
--thresholds turn each off or replace it. `gamornet models --info FOLDER`
shows what a folder holds.

Without saved thresholds, classes use the handbook's probability thresholds.
By default the set is the one of the backend and data set: keras_SDSS,
keras_CANDELS, tflearn_SDSS or tflearn_CANDELS, from the published model name
(SDSS_tl ...) or from the input shape SDSS / CANDELS. For any other input
shape, give --thresholds.

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
  gamornet predict raw_cutouts/ --model my_run/ --output classes.csv   # applies what the folder holds
  gamornet predict cutouts/ --model my_run/ --preprocessing none --calibration none --thresholds 0.7,0.7
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
        help="a published model (SDSS_sim, SDSS_tl, CANDELS_sim, CANDELS_tl), a model folder (what gamornet train "
             "writes) or a model file: a Keras .hdf5 file, or a TFLearn checkpoint prefix",
    )
    parser.add_argument("--backend", choices=models.BACKENDS, default="keras", help="default: keras")
    parser.add_argument(
        "--input-shape", metavar="SDSS|CANDELS|X,Y,NDIM",
        help="the network's input shape; default: that of the published model or of the model folder's card "
             "(required with a model file outside a model folder)",
    )
    parser.add_argument("--batch-size", type=int, default=64, metavar="N", help="images per batch (default: 64)")
    parser.add_argument(
        "--thresholds", metavar="SET|P_DISK,P_BULGE[,lead]|FILE.json",
        help="a handbook set (" + ", ".join(HANDBOOK_THRESHOLDS) + "), your own thresholds, or a file written "
             "by `gamornet thresholds --output`; default: the model folder's thresholds.json, else the handbook set "
             "of the backend and data set",
    )
    parser.add_argument("--hdu", type=int, metavar="N",
                        help="FITS HDU holding the image (default: the first with data; with --images, every image "
                             "HDU, such as the CCDs of a multi-extension exposure)")
    parser.add_argument(
        "--output", metavar="FILE.csv|FILE.fits|DIR.parquet",
        help="the table to write (CSV or FITS, by its ending; with --workers or --scheduler, also a Parquet "
             "folder); default: CSV on standard output",
    )
    parser.add_argument("--skip-bad", action="store_true",
                        help="skip bad inputs and list them at the end (with --catalog: keep each row with unusable "
                             "RA/Dec, without a stamp, flagged bad_coordinates)")
    parser.add_argument("--no-progress", action="store_true", help="do not show the progress bar")
    _add_predictor_arguments(parser)
    add_survey_arguments(parser, required=False)
    _cli_distributed.add_options(parser)
    parser.set_defaults(command_name="predict", handler=run)
    return parser


def _add_predictor_arguments(parser):
    """The options of the predictor itself: calibration, MC dropout, precision."""
    parser.add_argument(
        "--calibration", metavar="none|FILE.json",
        help="a temperature fitted for this model by `gamornet calibrate`, applied to every probability, or none; "
             "default: the model folder's calibration.json, if any. A calibration fitted for other weights is refused",
    )
    parser.add_argument(
        "--preprocessing", metavar="none|FILE.json",
        help="what every image gets before the network sees it: none (images as given), or a JSON file of "
             "preprocessing settings (a preprocessing.json); default: the model folder's preprocessing.json (its "
             "model card's otherwise), none for a published model",
    )
    parser.add_argument(
        "--mc-samples", type=int, default=0, metavar="N",
        help="MC dropout: predict each image N times with dropout on; the probabilities are the mean, and the "
             "columns p_disk_std, p_indet_std, p_bulge_std, entropy, mutual_information are added; N from 2 to 1000 "
             "(default: 0, off)",
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
        classify_stream(reader, predictor, thresholds, table, progress, outcome)
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
            "THRESH": describe_thresholds(thresholds)[:68], "PRECISN": predictor.precision}
    if predictor.calibration is not None:
        meta["CALIBT"] = predictor.calibration.temperature
    return meta


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
    resolved = resolve_model(args)
    input_shape = resolved.input_shape
    thresholds = resolve_thresholds(args, resolved)
    batch_size = _checks.check_positive_int(args.batch_size, "--batch-size")
    kind = _output_format(args.output)
    reader = _open_reader(args, input_shape, batch_size)
    if not resolved.published and args.backend == "keras" and resolved.folder is None:
        _checks.check_model_file(args.model, "--model")
    options = dict(predictor_options(args, input_shape, _own_files(args.output)), thresholds=thresholds)  # bf16 refines near their boundaries
    if args.output is not None:
        for path in _own_files(args.output):
            remove_stale_temporaries(path)
    outcome = Outcome()
    with load_predictor(args.model, input_shape, args.backend, **options) as predictor:
        print(applied_line(args, predictor, thresholds), file=sys.stderr)
        table = _write_table(args, reader, predictor, thresholds, kind, outcome)
        if predictor.precision == "bf16":
            outcome.refined = dict(predictor.engine.counts, margin=predictor.engine.refinement.margin)
    if args.output is not None and os.path.exists(partial_path(args.output)):
        # The partial rows of an earlier, stopped run are superseded by this complete table.
        os.remove(partial_path(args.output))
    lines = report_lines(table.rows, outcome, args.output, thresholds)
    if hasattr(reader, "bad_rows"):
        lines += bad_rows_lines(reader, "gamornet predict")
    print("\n".join(lines), file=sys.stderr)
    return 0


