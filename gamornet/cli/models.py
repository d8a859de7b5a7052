"""``gamornet models`` and ``gamornet download``: the published models and their cache.

``gamornet models`` lists the published models (and data files) with their
backend, input shape, whether they are cached, their size and sha256.
``gamornet download`` fetches them into the cache ahead of time, for example
before working offline (``GAMORNET_OFFLINE=1``) or on a machine without FTP.
Neither imports TensorFlow, except to check a TFLearn checkpoint it downloads.
"""

import argparse
import sys

from gamornet.models import _download
from gamornet.models import _registry
from gamornet.models.formats import tflearn_checkpoint

_STATE_WORDS = {
    "cached": "yes",
    "missing": "no",
    "partial": "partial",
    "unrecorded": "unrecorded",
    "changed": "CHANGED",
}

_ENVIRONMENT_HELP = """\
environment:
  GAMORNET_CACHE_DIR  the cache folder (default $XDG_CACHE_HOME/gamornet, else ~/.cache/gamornet)
  GAMORNET_MIRROR     base URLs replacing ftp://ftp.astro.yale.edu/pub/aghosh/, separated by
                      spaces or commas, tried in order (ftp://, http(s)://, file:// or local folders)
  GAMORNET_OFFLINE    1: never use the network; use cached files only
  GAMORNET_TIMEOUT    seconds to wait for a server to answer (default 60)
"""

_MODELS_DESCRIPTION = """\
List the published GaMorNet models of Ghosh et al. (2020) and the data files of
the public data release: backend, input shape, whether each is in the cache,
its size and its sha256 (recorded when it was downloaded).

CACHED is 'yes' (present and matching its record), 'no', 'partial' (some of a
TFLearn checkpoint's three files), 'unrecorded' (placed in the cache by hand:
checked and recorded at its next use) or 'CHANGED' (differs from what was
downloaded: download it again with --force). Sizes are compared with the
record; --verify also recomputes every sha256.
"""

_DOWNLOAD_DESCRIPTION = """\
Download published models (SDSS_sim, SDSS_tl, CANDELS_sim, CANDELS_tl) or data
files (predict_images, pred_table_sdss_keras, ...: see `gamornet models
--files`) into the cache. Each file is checked before it enters the cache (a
Keras model must hold the 8 weighted layers of its input shape, a TFLearn
checkpoint its 16 weight variables), and its sha256 and size are recorded;
later uses check the file against that record. Files already cached are
checked and kept, unless --force is given.
"""


def add_parser(subparsers):
    models = subparsers.add_parser(
        "models",
        help="list the published models, whether they are cached, their size and sha256",
        description=_MODELS_DESCRIPTION,
        epilog=_ENVIRONMENT_HELP + "\nexamples:\n  gamornet models\n  gamornet models --files --verify\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    models.add_argument("--verify", action="store_true", help="recompute the sha256 of every cached file")
    models.add_argument("--files", action="store_true",
                        help="also list the data files (tutorial images, prediction tables)")
    models.add_argument("--info", metavar="PATH",
                        help="instead, describe a model folder (or a model file): what it holds (weights, model "
                             "card, preprocessing, calibration, thresholds) and what gamornet predict applies")
    models.set_defaults(command_name="models", handler=run_models)

    download = subparsers.add_parser(
        "download",
        help="download published models or data files into the cache",
        description=_DOWNLOAD_DESCRIPTION,
        epilog=_ENVIRONMENT_HELP + "\nexamples:\n  gamornet download SDSS_tl\n"
        "  gamornet download CANDELS_sim CANDELS_tl --backend both\n"
        "  GAMORNET_MIRROR=https://example.org/gamornet/ gamornet download SDSS_sim --force\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    download.add_argument("names", nargs="+", metavar="NAME",
                          help="published model names, or data file names")
    download.add_argument("--backend", choices=("keras", "tflearn", "both"), default="keras",
                          help="the flavour of the models to download (default: keras; ignored for data files)")
    download.add_argument("--force", action="store_true",
                          help="download again even when a valid copy is cached, and replace it")
    download.add_argument("--quiet", action="store_true", help="no progress bars")
    download.set_defaults(command_name="download", handler=run_download)


# --------------------------------------------------------------------------- formatting


def _size(size):
    if size is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024


def _shape(shape):
    return "x".join(str(size) for size in shape)


def _table(header, rows):
    widths = [max(len(str(row[column])) for row in [header] + rows) for column in range(len(header))]
    lines = []
    for row in [header] + rows:
        lines.append("  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip())
    return lines


def _digest(item):
    return item.sha256 or item.recorded_sha256 or item.known_sha256 or "-"


def _model_rows(entry, status):
    state = _STATE_WORDS[status.state]
    present = [item.size for item in status.files if item.exists]
    total = sum(present) if present else None
    if len(status.files) == 1:
        item = status.files[0]
        return [[entry.name, entry.backend, _shape(entry.input_shape), state, _size(item.size), _digest(item)]]
    rows = [[entry.name, entry.backend, _shape(entry.input_shape), state, _size(total), "-" if total is None else ""]]
    if status.state == "missing":
        return rows
    for item, suffix in zip(status.files, tflearn_checkpoint.SUFFIXES):
        rows.append([f"  {suffix}", "", "", "", _size(item.size), _digest(item)])
    return rows


def _applied(resolved):
    """What ``gamornet predict --model PATH`` applies by default, in one line (or why it would stop)."""
    from gamornet.errors import CalibrationMismatchError
    from gamornet.models.folder import describe_applied
    from gamornet.science.calibration import load_calibration
    from gamornet.science.classify import default_thresholds

    try:
        path = resolved.calibration_file
        calibration = None if path is None else load_calibration(path, resolved.sha256)
        thresholds, source = resolved.thresholds
    except CalibrationMismatchError as error:
        return f"nothing until this is fixed: {error}"
    if thresholds is not None:
        rule = f"p_disk >= {thresholds.disk}, p_bulge >= {thresholds.bulge}" + (
            ", p_disk leading" if thresholds.disk_must_lead else "")
    else:
        try:
            rule = default_thresholds(resolved.backend, resolved.data_set, resolved.input_shape, "--thresholds")
        except ValueError:
            rule = "none: give --thresholds (no handbook set fits this input shape)"
    return describe_applied(resolved.preprocessing, (calibration, path), (rule, source))


def run_info(path):
    """Print what a model folder (or file) holds and what ``gamornet predict`` applies; return the exit status."""
    from gamornet import models
    from gamornet.models.folder import describe_folder

    resolved = models.resolve_model(path, "keras")
    for line in describe_folder(resolved):
        print(line)
    print(f"gamornet predict --model {path} applies: {_applied(resolved)}")
    return 0


def run_models(args):
    """Print the table of published models (and data files); exit status 1 if a cached file changed."""
    if args.info is not None:
        return run_info(args.info)
    mirrors = _download.mirror_urls()
    print("Published GaMorNet models of Ghosh et al. (2020), ApJ 895, 112")
    print(f"cache:   {_download.cache_dir()}")
    print(f"source:  {' then '.join(mirrors)}" + ("   (offline: GAMORNET_OFFLINE is set)" if _download.is_offline()
                                                   else ""))
    print()
    changed = []
    rows = []
    for entry in _registry.PUBLISHED_MODELS:
        status = _download.cached_status(entry, verify=args.verify)
        rows += _model_rows(entry, status)
        if status.state == "changed":
            changed.append(f"gamornet download {entry.name} --backend {entry.backend} --force")
    for line in _table(["NAME", "BACKEND", "INPUT SHAPE", "CACHED", "SIZE", "SHA256"], rows):
        print(line)
    if args.files:
        print()
        rows = []
        for entry in _registry.PUBLISHED_FILES:
            status = _download.cached_status(entry, verify=args.verify)
            item = status.files[0]
            rows.append([entry.name, _STATE_WORDS[status.state], _size(item.size), _digest(item), entry.path])
            if status.state == "changed":
                changed.append(f"gamornet download {entry.name} --force")
        for line in _table(["DATA FILE", "CACHED", "SIZE", "SHA256", "PATH"], rows):
            print(line)
    if changed:
        print("\nSome cached files differ from what was downloaded. Download them again with:", file=sys.stderr)
        for command in changed:
            print(f"  {command}", file=sys.stderr)
        return 1
    return 0


# --------------------------------------------------------------------------- download


def _entries(names, backend):
    """Registry entries for ``names``, all checked before anything is downloaded."""
    backends = _registry.BACKENDS if backend == "both" else (backend,)
    file_names = [entry.name for entry in _registry.PUBLISHED_FILES]
    entries = []
    for name in names:
        if _registry.is_published_name(name):
            entries += [_registry.published_model(name, flavour) for flavour in backends]
        elif name in file_names:
            entries.append(_registry.published_file(name))
        else:
            raise ValueError(
                f"NAME must be a published model ({', '.join(_registry.PUBLISHED_MODEL_NAMES)}) or data file "
                f"({', '.join(file_names)}). Received: {name!r}"
            )
    unique = {}
    for entry in entries:  # entries hold dicts (not hashable): deduplicate by identity of (name, backend)
        unique.setdefault((type(entry).__name__, entry.name, getattr(entry, "backend", None)), entry)
    return list(unique.values())


def run_download(args):
    """Fetch each named model or data file into the cache and print where it is."""
    entries = _entries(args.names, args.backend)
    for done, entry in enumerate(entries):
        before = _download.cached_status(entry).state
        try:
            _download.fetch(entry, force=args.force, progress=not args.quiet)
        except KeyboardInterrupt as stop:
            finished = ", ".join(item.describe() for item in entries[:done])
            stop.kept = (f"{entry.describe()} was not downloaded (nothing of it is in the cache)"
                         + (f"; {finished} {'is' if done == 1 else 'are'} in the cache" if done else ""))
            raise
        after = _download.cached_status(entry)
        if args.force or before in ("missing", "partial"):
            what = "downloaded"
        elif before == "unrecorded":
            what = "checked and recorded"
        else:
            what = "already cached"
        label = f"{entry.name} ({entry.backend})" if hasattr(entry, "backend") else entry.name
        print(f"{label}: {what}")
        for item in after.files:
            print(f"  {item.local_path}  {_size(item.size)}  sha256 {item.recorded_sha256}")
    return 0
