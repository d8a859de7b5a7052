"""``gamornet calibrate`` and ``gamornet thresholds``: learn from labelled galaxies.

Both read a table written by ``gamornet predict`` (CSV, FITS, or Parquet: a
file, or the folder of a cluster run; source, p_disk, p_indet, p_bulge, class)
and a CSV of the true classes of some of those galaxies, matched by ``source``
(by the catalogue's id column, the table's first, for a table of ``gamornet
predict --catalog``; its rows without probabilities are left out). ``calibrate`` fits the temperature that
calibrates the probabilities and writes it, with the model's sha256, as JSON
for ``gamornet predict --calibration``. ``thresholds`` chooses the lowest
thresholds on p_disk and p_bulge that reach given purities and writes them as
JSON for ``gamornet predict --thresholds``. Neither imports TensorFlow.
"""

import argparse
import csv
import os
import sys

import numpy as np

from gamornet import models
from gamornet._utils.hashing import file_sha256
from gamornet.presets import CLASS_NAMES
from gamornet.science import calibration
from gamornet.science._checks import check_n_bins, check_purity
from gamornet.science.plots import purity_completeness_diagram, reliability_diagram
from gamornet.science.thresholds import choose_thresholds, save_thresholds

_PROBABILITY_COLUMNS = ("p_disk", "p_indet", "p_bulge")
_FITS_ENDINGS = (".fits", ".fit", ".fits.gz", ".fit.gz")
_PARQUET_ENDINGS = (".parquet", ".pq")

_LABELS_HELP = """\
labels file (CSV, one row per labelled galaxy, matched to the predictions by source):
  source,label             label: disk, indeterminate or bulge (or 0, 1, 2)
  source,disk,indeterminate,bulge    one-hot: 1 in the true class's column, 0 elsewhere
For a table of `gamornet predict --catalog`, the galaxies are matched by the
catalogue's id column (the table's first column; the labels name it the same
way, or 'source'), and rows without probabilities (no stamp) are left out.
Only galaxies present in both files are used; how many were left out is printed.
"""

_CALIBRATE_DESCRIPTION = """\
Fit the temperature T that calibrates a model's probabilities on labelled
galaxies (temperature scaling, Guo et al. 2017): the calibrated probabilities
are softmax(log(p) / T), T being chosen to maximise the likelihood of the true
classes. T > 1 means the model was over-confident. Each galaxy keeps its most
probable class; only the probabilities change.

The JSON output records T, the sha256 of the model that made the predictions
(a temperature holds only for that model), the files it was fitted on with
their sha256, and the expected calibration error (ECE) before and after.
`gamornet predict --calibration calib.json` applies it and refuses it for any
other model. With --save MODEL_FOLDER it is written into the model folder (as
calibration.json), where `gamornet predict --model MODEL_FOLDER` applies it by
default, until the folder's weights change.
"""

_THRESHOLDS_DESCRIPTION = """\
Choose the thresholds that turn probabilities into classes from labelled
galaxies: the lowest threshold on p_disk whose disk-dominated galaxies are at
least --disk-purity pure, and the same on p_bulge for bulges. Prints the
purity, completeness and indeterminate fraction of the rule, writes the
purity/completeness curves as a PNG (--plot; as in Figs. 8 and 9 of Ghosh et
al. 2020), and the rule as JSON (--output) for `gamornet predict --thresholds`,
or into a model folder (--save MODEL_FOLDER, as thresholds.json), where
`gamornet predict --model MODEL_FOLDER` uses it by default.
Use predictions made the way you will use the thresholds (calibrated or not).
"""


def add_parser(subparsers):
    calibrate = subparsers.add_parser(
        "calibrate",
        help="fit the temperature that calibrates a model's probabilities on labelled galaxies",
        description=_CALIBRATE_DESCRIPTION,
        epilog=_LABELS_HELP + "\nexamples:\n"
        "  gamornet calibrate predictions.csv --labels labels.csv --output calib.json\n"
        "  gamornet calibrate predictions.csv --labels labels.csv --model SDSS_tl --output calib.json "
        "--plot reliability.png\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_common(calibrate)
    calibrate.add_argument("--output", metavar="CALIB.json", help="the calibration file to write")
    calibrate.add_argument("--save", metavar="MODEL_FOLDER",
                           help="write it into this model folder (calibration.json), checked against its weights")
    calibrate.add_argument(
        "--model", metavar="NAME_OR_PATH",
        help="the model that made the predictions (published name or file), when the predictions file does not "
             "record its sha256",
    )
    calibrate.add_argument("--backend", choices=("keras", "tflearn"), default="keras",
                           help="the backend of --model (default: keras)")
    calibrate.add_argument("--n-bins", type=int, default=15, metavar="N",
                           help="confidence bins of the ECE (default: 15)")
    calibrate.add_argument("--plot", metavar="FILE.png", help="also write a reliability diagram, before and after")
    calibrate.set_defaults(command_name="calibrate", handler=run_calibrate)

    thresholds = subparsers.add_parser(
        "thresholds",
        help="choose probability thresholds reaching given purities from labelled galaxies",
        description=_THRESHOLDS_DESCRIPTION,
        epilog=_LABELS_HELP + "\nexamples:\n"
        "  gamornet thresholds predictions.csv --labels labels.csv --plot curves.png\n"
        "  gamornet thresholds predictions.csv --labels labels.csv --disk-purity 0.9 --bulge-purity 0.9 "
        "--output thr.json\n"
        "  gamornet predict cutouts/ --model SDSS_tl --thresholds thr.json --output classes.csv\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_common(thresholds)
    thresholds.add_argument("--disk-purity", type=float, default=0.95, metavar="P",
                            help="the purity of disk-dominated galaxies to reach (default: 0.95)")
    thresholds.add_argument("--bulge-purity", type=float, default=0.95, metavar="P",
                            help="the purity of bulge-dominated galaxies to reach (default: 0.95)")
    thresholds.add_argument("--output", metavar="THR.json", help="write the thresholds for gamornet predict")
    thresholds.add_argument("--save", metavar="MODEL_FOLDER",
                            help="write them into this model folder (thresholds.json), checked against its weights")
    thresholds.add_argument("--plot", metavar="FILE.png", help="write the purity and completeness curves")
    thresholds.set_defaults(command_name="thresholds", handler=run_thresholds)


def _add_common(parser):
    parser.add_argument("predictions", metavar="PREDICTIONS.csv",
                        help="a table written by gamornet predict: CSV, FITS (.fits), or Parquet (a .parquet file, "
                             "or the folder of a cluster run)")
    parser.add_argument("--labels", required=True, metavar="LABELS.csv", help="the true classes (see below)")


# --------------------------------------------------------------------------- reading


def _read_csv(path, what, key=None):
    """(header comments {key: value}, column names, rows, key column) of a CSV file whose first lines may be
    '# key: value'. The key column is ``key``, else 'source', else (for predictions) the first column."""
    comments = {}
    with open(path, newline="", encoding="utf-8") as stream:
        lines = iter(stream)
        body = []
        for line in lines:
            if line.startswith("#"):
                name, separator, value = line[1:].replace("=", ":", 1).partition(":")
                if separator:
                    comments[name.strip()] = value.strip()
                continue
            body.append(line)
            break
        body.extend(lines)
    rows = list(csv.reader(body))
    if not rows:
        raise ValueError(f"the {what} file {path!r} is empty: expected a header line and one row per galaxy")
    header = [name.strip() for name in rows[0]]
    return comments, header, rows[1:], _key_of(path, header, what, key)


def _key_of(path, names, what, key):
    """The column that names each galaxy: for predictions 'source' (files of images) or the first column (a
    catalogue's id); for labels the predictions' key, or 'source'."""
    if key is None:
        if not names:
            _no_key(path, names, what, "source")
        return "source" if "source" in names else names[0]
    for candidate in (key, "source"):
        if candidate in names:
            return candidate
    return _no_key(path, names, what, key)


def _no_key(path, names, what, key):
    wanted = repr(key) if key == "source" else f"{key!r} (the predictions' key column) or 'source'"
    raise ValueError(f"the {what} file {path!r} has no column {wanted} to match galaxies by. Its columns: "
                     f"{', '.join(names) or 'none'}")


def _row_by_source(path, header, rows, what, key):
    column = header.index(key)
    by_source = {}
    for number, row in enumerate(rows, start=2):
        if not row:
            continue
        if len(row) != len(header):
            raise ValueError(f"{path!r}, line {number}: {len(row)} fields, but the header has {len(header)}")
        source = row[column]
        if source in by_source:
            raise ValueError(f"{path!r}: the {key} {source!r} appears twice ({what} must name each galaxy once)")
        by_source[source] = row
    if not by_source:
        raise ValueError(f"the {what} file {path!r} has a header but no rows")
    return by_source


def _read_typed_predictions(path):
    """As _read_predictions, for a FITS table, a Parquet file or a Parquet folder of gamornet predict."""
    if os.path.isdir(path) or path.lower().endswith(_PARQUET_ENDINGS):
        import pyarrow.parquet as pq

        from gamornet.survey.distributed import read_provenance

        try:
            table = pq.read_table(path).to_pandas()
        except Exception as error:  # noqa: BLE001 - any failure is a folder or file that is not a Parquet table
            raise OSError(f"cannot read {path!r} as a Parquet table of gamornet predict ({error})") from error
        names = list(table.columns)
        try:
            recorded = read_provenance(path).get("model_sha256")
        except (ValueError, OSError):
            recorded = None
    else:
        from astropy.table import Table

        table = Table.read(path, mask_invalid=False)
        names, recorded = list(table.colnames), table.meta.get("MODELSHA")
    key = _key_of(path, names, "predictions", None)
    missing = [name for name in _PROBABILITY_COLUMNS if name not in names]
    if missing:
        raise ValueError(f"{path!r} is not a gamornet predict table: it lacks the column(s) {', '.join(missing)}. "
                         f"Its columns: {', '.join(names)}")
    keys = [value.decode() if isinstance(value, bytes) else str(value) for value in table[key]]
    values = np.stack([np.asarray(table[name], dtype=np.float64) for name in _PROBABILITY_COLUMNS], axis=1)
    return keys, values, recorded, key


def _read_predictions(path):
    """({key: [p_disk, p_indet, p_bulge]}, model sha256 recorded in the file or None, key column, rows left out
    for having no probabilities)."""
    if os.path.isdir(path) or path.lower().endswith(_FITS_ENDINGS + _PARQUET_ENDINGS):
        keys, values, recorded, key = _read_typed_predictions(path)
        rows = {}
        for source, row in zip(keys, values.tolist()):
            if source in rows:
                raise ValueError(f"{path!r}: the {key} {source!r} appears twice (predictions must name each galaxy "
                                 "once)")
            rows[source] = row
    else:
        comments, header, lines, key = _read_csv(path, "predictions")
        missing = [name for name in _PROBABILITY_COLUMNS if name not in header]
        if missing:
            raise ValueError(
                f"{path!r} is not a gamornet predict table: it lacks the column(s) {', '.join(missing)} "
                f"(expected source (or a catalogue's id), p_disk, p_indet, p_bulge, class). Its columns: "
                f"{', '.join(header)}"
            )
        by_source = _row_by_source(path, header, lines, "predictions", key)
        indices = [header.index(name) for name in _PROBABILITY_COLUMNS]
        rows = {}
        for source, row in by_source.items():
            try:
                rows[source] = [float(row[i]) if row[i].strip() else np.nan for i in indices]
            except ValueError:
                raise ValueError(f"{path!r}: the probabilities of {source!r} are not numbers: "
                                 f"{[row[i] for i in indices]}") from None
        recorded = {comments["model_sha256"]} if "model_sha256" in comments else set()
        if "model_sha256" in header:
            recorded |= {row[header.index("model_sha256")] for row in by_source.values()}
        if len(recorded) > 1:
            raise ValueError(f"{path!r} holds predictions of several models (sha256 {', '.join(sorted(recorded))}); "
                             "calibrate each model on its own predictions")
        recorded = recorded.pop() if recorded else None
    if not rows:
        raise ValueError(f"the predictions file {path!r} has no rows")
    # Rows without probabilities (catalogue rows without a stamp) have nothing to calibrate.
    probabilities = {source: row for source, row in rows.items() if np.isfinite(row).all()}
    return probabilities, recorded, key, len(rows) - len(probabilities)


def _read_labels(path, key):
    """{key: class index} from a labels CSV (see _LABELS_HELP), matched on the predictions' key column."""
    _, header, rows, key = _read_csv(path, "labels", key)
    by_source = _row_by_source(path, header, rows, "labels", key)
    if "label" in header:
        column = header.index("label")
        values = [row[column].strip() for row in by_source.values()]
        numeric = {"0": 0, "1": 1, "2": 2}
        names = {name: index for index, name in enumerate(CLASS_NAMES)}
        labels = []
        for source, value in zip(by_source, values):
            index = numeric.get(value, names.get(value.lower()))
            if index is None:
                raise ValueError(f"{path!r}: the label of {source!r} is {value!r}; expected disk, indeterminate or "
                                 "bulge, or 0, 1 or 2")
            labels.append(index)
        return dict(zip(by_source, labels))
    if all(name in header for name in CLASS_NAMES):
        columns = [header.index(name) for name in CLASS_NAMES]
        labels = {}
        for source, row in by_source.items():
            one_hot = [row[i].strip() for i in columns]
            if sorted(one_hot) not in (["0", "0", "1"], ["0.0", "0.0", "1.0"]):
                raise ValueError(f"{path!r}: the one-hot label of {source!r} is {one_hot}; expected one 1 and two 0s")
            labels[source] = one_hot.index(max(one_hot))
        return labels
    raise ValueError(
        f"the labels file {path!r} needs a 'label' column (disk, indeterminate, bulge or 0, 1, 2) or one-hot columns "
        f"disk, indeterminate, bulge. Its columns: {', '.join(header)}"
    )


def _table_sha256(path):
    """The sha256 of a table file; of a Parquet folder, the sha256 of its parts' names and sha256s, in order."""
    if not os.path.isdir(path):
        return file_sha256(path)
    import hashlib

    digest = hashlib.sha256()
    for name in sorted(os.listdir(path)):
        if name.endswith(".parquet") and not name.startswith((".", "_")):
            digest.update(f"{name} {file_sha256(os.path.join(path, name))}\n".encode())
    return digest.hexdigest()


def _labelled_set(args):
    """(probabilities (n, 3), labels (n,), description dict, model sha256 from the predictions or None)."""
    probabilities, recorded_sha256, key, without = _read_predictions(args.predictions)
    if without:
        print(f"gamornet {args.command_name}: left out {without} rows of {args.predictions!r} without probabilities "
              "(catalogue rows without a stamp)", file=sys.stderr)
    if not probabilities:
        raise ValueError(f"no row of {args.predictions!r} has probabilities: nothing to learn from")
    labels = _read_labels(args.labels, key)
    common = [source for source in probabilities if source in labels]
    if not common:
        raise ValueError(
            f"no galaxy of {args.predictions!r} is in {args.labels!r}: the labels' {key} column must name galaxies "
            f"as the predictions' {key} column does (such as {next(iter(probabilities))!r})"
        )
    unmatched_predictions, unmatched_labels = len(probabilities) - len(common), len(labels) - len(common)
    if unmatched_predictions or unmatched_labels:
        print(f"gamornet {args.command_name}: {len(common)} galaxies are in both files; left out "
              f"{unmatched_predictions} predictions without a label and {unmatched_labels} labels without a "
              "prediction", file=sys.stderr)
    description = {
        "n": len(common),
        "predictions": {"file": os.path.abspath(args.predictions),
                        "sha256": _table_sha256(args.predictions)},
        "labels": {"file": os.path.abspath(args.labels), "sha256": file_sha256(args.labels)},
        "unmatched_predictions": unmatched_predictions,
        "unmatched_labels": unmatched_labels,
        "class_counts": {name: sum(labels[s] == i for s in common) for i, name in enumerate(CLASS_NAMES)},
    }
    return (np.array([probabilities[s] for s in common]), np.array([labels[s] for s in common]),
            description, recorded_sha256)


def _check_output(path, ending, option):
    if path is None:
        return
    if not path.lower().endswith(ending):
        raise ValueError(f"{option} must end in {ending}. Received: {path!r}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{option}: the folder {folder!r} does not exist")


# --------------------------------------------------------------------------- the commands


def _model_sha256(args, recorded):
    if args.model is None:
        if recorded is None:
            raise ValueError(
                f"{args.predictions!r} does not record which model made it (no model_sha256): give the model with "
                "--model NAME_OR_PATH (a published name such as SDSS_tl, or the model file)"
            )
        return recorded, None
    computed = models.model_sha256(models.resolve(args.model, args.backend), args.backend)
    if recorded is not None and recorded.lower() != computed:
        raise ValueError(
            f"{args.predictions!r} was made by the model with sha256 {recorded[:16]}..., but --model {args.model!r} "
            f"has sha256 {computed[:16]}...: calibrate a model on its own predictions"
        )
    return computed, args.model


def _save_folder(args, recorded):
    """(the model folder of --save, the sha256 of its weights), refusing predictions made by other weights."""
    if not os.path.isdir(args.save):
        raise NotADirectoryError(f"--save must be a model folder (what gamornet train writes). Received: {args.save!r}")
    sha256 = models.resolve_model(args.save, "keras").sha256
    if recorded is not None and recorded.lower() != sha256:
        what = "a calibration is" if args.command_name == "calibrate" else "thresholds are"
        raise ValueError(
            f"{args.predictions!r} was made by the model with sha256 {recorded[:16]}..., but the weights in "
            f"--save {args.save!r} have sha256 {sha256[:16]}...: {what} saved only beside the weights whose "
            "predictions it was made from"
        )
    return args.save, sha256


def run_calibrate(args):
    """Run ``gamornet calibrate``; return the exit status."""
    if args.output is None and args.save is None:
        raise ValueError("give --output CALIB.json (a calibration file), or --save MODEL_FOLDER (into a model folder)")
    _check_output(args.output, ".json", "--output")
    _check_output(args.plot, ".png", "--plot")
    check_n_bins(args.n_bins)
    probabilities, labels, description, recorded = _labelled_set(args)
    if args.save is not None:
        _, folder_sha256 = _save_folder(args, recorded)
        recorded = recorded or folder_sha256
    sha256, model = _model_sha256(args, recorded)
    temperature = calibration.fit_temperature(probabilities, labels)
    calibrated = calibration.apply_temperature(probabilities, temperature)
    before = calibration.expected_calibration_error(probabilities, labels, args.n_bins)
    after = calibration.expected_calibration_error(calibrated, labels, args.n_bins)
    description.update(ece_before=before, ece_after=after, n_bins=args.n_bins)
    written = [args.output] if args.output else []
    if args.output:
        calibration.save_calibration(args.output, temperature, sha256, model=model, fitted_on=description)
    if args.save is not None:
        from gamornet.models.folder import CALIBRATION_FILE

        path = os.path.join(args.save, CALIBRATION_FILE)
        written.append(calibration.save_calibration(path, temperature, sha256, model=model or args.save,
                                                    fitted_on=description))  # fmt: skip
    if args.plot:
        reliability_diagram(probabilities, labels, args.plot, args.n_bins, calibrated=calibrated)
    print(f"temperature T = {temperature:.4f}, fitted on {len(labels)} labelled galaxies "
          f"({'over' if temperature > 1 else 'under'}-confident model)")
    print(f"expected calibration error ({args.n_bins} bins): {before:.4f} before, {after:.4f} after")
    print(f"written: {', '.join(written + ([args.plot] if args.plot else []))}")
    if args.save is not None:
        print(f"gamornet predict --model {args.save} applies it by default (--calibration none turns it off)")
    return 0


def run_thresholds(args):
    """Run ``gamornet thresholds``; return the exit status."""
    _check_output(args.output, ".json", "--output")
    _check_output(args.plot, ".png", "--plot")
    check_purity(args.disk_purity, "--disk-purity")
    check_purity(args.bulge_purity, "--bulge-purity")
    probabilities, labels, description, recorded = _labelled_set(args)
    if args.save is not None:
        _, recorded = _save_folder(args, recorded)
    choice = choose_thresholds(probabilities, labels, args.disk_purity, args.bulge_purity)
    print(choice)
    if recorded is not None:
        description["model_sha256"] = recorded
    written = []
    if args.output:
        written.append(save_thresholds(args.output, choice, chosen_from=description))
    if args.save is not None:
        from gamornet.models.folder import THRESHOLDS_FILE

        written.append(save_thresholds(os.path.join(args.save, THRESHOLDS_FILE), choice, chosen_from=description))
    if args.plot:
        written.append(purity_completeness_diagram(probabilities, labels, args.plot, choice))
    if written:
        print(f"written: {', '.join(written)}")
    if args.output:
        print(f"use them with: gamornet predict ... --thresholds {args.output}")
    if args.save is not None:
        print(f"gamornet predict --model {args.save} uses them by default (--thresholds replaces them)")
    return 0
