"""Classify survey-scale catalogues on a Dask cluster, into a Parquet data set that a rerun completes.

The images (FITS files, folders, cubes, ``.npy`` stacks, ranges of them) are
cut into *partitions* of ``partition_size`` images. Each partition is one Dask
task: a worker classifies its images with the predictor of
:func:`gamornet.load_predictor` (built once per worker process and kept) and
writes one Parquet file, under a temporary name renamed when complete. The
output folder holds

- ``part-<index>-<id>.parquet``, one per partition, with the columns of the
  table of ``gamornet predict`` (``source, p_disk, p_indet, p_bulge, class``
  and the predictor's further columns); ``<id>`` is derived from the
  partition's inputs (paths and ranges), so that a rerun recognises the
  partitions already done;
- ``_manifest.json``: the settings of the run, and the partitions finished;
- ``_metadata`` and ``_common_metadata``, once every partition is finished:
  the schema, the provenance and the row groups of every part, which pyarrow,
  pandas and Dask read.

Running the same call again does only the partitions that are missing; a
different model, other settings or other inputs on an existing folder are
refused (:class:`gamornet.errors.ResumeMismatchError`). A worker that dies
mid-task has its task rerun elsewhere by Dask; since a part is named by its
partition, the output holds every input once. The scheduler is Dask's: a
``LocalCluster`` on one machine, ``dask-jobqueue`` on Slurm, or any existing
cluster (see the "Running on a cluster" page of the documentation).

Needs the ``distributed`` extra (``pip install gamornet[distributed]``: dask,
distributed, pyarrow, pandas). Importing this module imports none of them,
nor TensorFlow; the workers import TensorFlow.

Examples
--------
>>> from gamornet.survey.distributed import predict_catalogue
>>> predict_catalogue(["cutouts/"], "SDSS_tl", "sdss.parquet", client=4)   # doctest: +SKIP
'sdss.parquet'
>>> import pandas as pd
>>> table = pd.read_parquet("sdss.parquet")                                  # doctest: +SKIP
"""

import collections
import contextlib
import dataclasses
import datetime
import hashlib
import inspect
import json
import logging
import os
import re
import shutil
import signal
import socket
import threading
import time

import numpy as np

from gamornet import models
from gamornet._utils import checks as _checks
from gamornet.io import images as io
from gamornet._utils.atomic import atomic_path, atomic_write, is_temporary_name, remove_stale_temporaries
from gamornet._utils.hashing import file_sha256
from gamornet._utils.progress import progress_bar
from gamornet.io.tables import CsvTable, FitsTable, ParquetTable
from gamornet.science.classify import Thresholds, default_thresholds, resolve_thresholds
from gamornet.errors import BadInputError, ModelFileError, ResumeMismatchError

__all__ = ["DEFAULT_PARTITION_SIZE", "MANIFEST_NAME", "Partition", "local_cluster", "plan_partitions", "run_partitions",
           "run_settings",
           "predict_catalogue", "read_provenance"]

#: Images per partition (one Dask task, one Parquet file) unless told otherwise.
DEFAULT_PARTITION_SIZE = 4096
#: The file of an output folder that records its settings and finished partitions.
MANIFEST_NAME = "_manifest.json"
#: The key of the Parquet file metadata that holds the provenance (JSON).
PROVENANCE_KEY = "gamornet"
#: The key of a part's metadata that describes its partition (JSON).
PARTITION_KEY = "gamornet.partition"

_MANIFEST_VERSION = 1
# A FITS file larger than this many single-precision images is opened to count its planes (a cube, which
# is then split into ranges); smaller files count one image each, without being opened.
_CUBE_IMAGES = 64
_PART_NAME = re.compile(r"^part-(?P<index>\d+)-(?P<id>[0-9a-f]{20})\.parquet$")
_FITS_OUTPUTS = (".fits", ".fit", ".fits.gz", ".fit.gz")
# While partitions finish, the manifest is rewritten at most every 2 s, and at most 5 % of the time (a survey's
# manifest holds 10^5 partitions); always at the end. Parts missing from it are found on disk by the next run.
_MANIFEST_INTERVAL_S = 2.0
_MANIFEST_TIME_SHARE = 0.05


# --------------------------------------------------------------------------- partitions


@dataclasses.dataclass(frozen=True)
class Partition:
    """A share of the inputs that one Dask task classifies into one Parquet file.

    Attributes
    ----------
    index : int
        Its place in the plan (the order of the rows of the output).
    inputs : tuple of str
        Absolute paths of its inputs, with a range for arrays and cubes
        (``'/data/stack.npy[4096:8192]'``), as :class:`gamornet.io.images.ImageReader`
        reads them.
    images : int
        How many images it holds (a FITS file counts one, unless it was
        found to be a cube).
    """

    index: int
    inputs: tuple
    images: int

    @property
    def id(self):
        """20 hexadecimal digits derived from the inputs (paths and ranges): the same inputs, the same id."""
        return hashlib.sha256(json.dumps(list(self.inputs)).encode("utf-8")).hexdigest()[:20]

    @property
    def file_name(self):
        """The name of its Parquet file in the output folder."""
        return f"part-{self.index:06d}-{self.id}.parquet"


def _fits_planes(path, input_shape, hdu):
    """The number of images of a FITS cube; None for a single image or a file that cannot be read here."""
    from astropy.io import fits

    try:
        with fits.open(path, memmap=False, lazy_load_hdus=True) as hdulist:
            image_hdu, _ = io.find_image_hdu(hdulist, hdu)
            if image_hdu is None:
                return None
            layout = io.image_layout(image_hdu.shape, input_shape)
            return int(image_hdu.shape[0]) if layout is not None and layout[0] else None
    except Exception:  # noqa: BLE001 - the reader names the bad file when a worker reads it
        return None


def _image_range(item, input_shape, hdu):
    """(first, last) image of an input that can be split into ranges (an array or a cube), else None."""
    if item.kind == "npy":
        try:
            shape = io.read_npy_header(item.path)[0]
        except Exception:  # noqa: BLE001 - reported as a bad file when read
            return None
        return item.bounds(int(shape[0])) if len(shape) >= 3 else None
    image_bytes = 4 * int(np.prod(input_shape))
    if not item.ranged and os.path.getsize(item.path) <= _CUBE_IMAGES * image_bytes:
        return None
    planes = _fits_planes(item.path, input_shape, hdu)
    return None if planes is None else item.bounds(planes)


def plan_partitions(inputs, input_shape, partition_size=DEFAULT_PARTITION_SIZE, hdu=None, exclude=()):
    """Cut the inputs into partitions of ``partition_size`` images, in input order.

    ``.npy`` arrays and FITS cubes are split into ranges (``stack.npy[0:4096]``)
    across partitions; FITS files of one image each are grouped. A FITS file
    is opened here only when it is large enough to be a cube (more than 64
    images' worth of single-precision pixels); a smaller cube counts as one
    image, which only makes its partition larger.

    Parameters
    ----------
    inputs : str or list of str
        As for :class:`gamornet.io.images.ImageReader` (files, folders, glob patterns,
        ranges).
    input_shape : {'SDSS', 'CANDELS'} or tuple of int
    partition_size : int
        Images per partition.
    hdu : int, optional
        The FITS HDU holding the images (default: the first with data).
    exclude : iterable of str
        Files that folders and patterns must not yield.

    Returns
    -------
    list of Partition

    Raises
    ------
    FileNotFoundError, ValueError, TypeError
        As :func:`gamornet.io.images.expand_inputs`; a partition size that is not a
        positive integer.
    """
    shape = _checks.check_input_shape(input_shape)
    size = _checks.check_positive_int(partition_size, "partition_size")
    partitions, current, filled = [], [], 0

    def close():
        nonlocal current, filled
        if current:
            partitions.append(Partition(len(partitions), tuple(current), filled))
        current, filled = [], 0

    for item in io.expand_inputs_with_ranges(inputs, exclude):
        item = dataclasses.replace(item, path=os.path.abspath(item.path))
        bounds = _image_range(item, shape, hdu)
        if bounds is None:
            current.append(str(item))
            filled += 1
        else:
            first, last = bounds
            while first < last:
                take = min(size - filled, last - first)
                current.append(str(dataclasses.replace(item, start=first, stop=first + take)))
                filled += take
                first += take
                if filled >= size:
                    close()
        if filled >= size:
            close()
    close()
    return partitions


def _plan_record(partitions, partition_size):
    digest = hashlib.sha256("\n".join(partition.id for partition in partitions).encode("ascii")).hexdigest()
    return {"partitions": len(partitions), "images": sum(partition.images for partition in partitions),
            "partition_size": partition_size, "sha256": digest}


# --------------------------------------------------------------------------- settings


def _jsonable(value):
    return json.loads(json.dumps(value, default=lambda item: os.fspath(item) if isinstance(item, os.PathLike)
                                 else str(item)))


def _array_sha256(array):
    from gamornet.inference.int8 import calibration_sha256

    return calibration_sha256(np.asarray(array))


@dataclasses.dataclass(frozen=True)
class _NpyFile:
    """An array option of the predictor (int8's calibration images), saved in the output folder for the workers."""

    path: str
    sha256: str
    shape: tuple

    def load(self):
        array = np.load(self.path)
        if _array_sha256(array) != self.sha256:
            raise ValueError(f"{self.path!r} changed since the run started (its sha256 differs): rerun the command, "
                             "which writes it again")
        return array


def _option_record(value):
    """How an option of the predictor is recorded and compared: arrays and files by their sha256."""
    if isinstance(value, _NpyFile):
        return {"array_sha256": value.sha256, "shape": list(value.shape)}
    if isinstance(value, np.ndarray):
        return {"array_sha256": _array_sha256(value), "shape": list(value.shape)}
    if isinstance(value, (str, os.PathLike)) and os.path.isfile(value):
        return {"file": os.path.basename(os.fspath(value)), "sha256": file_sha256(value)}
    return _jsonable(value)


@dataclasses.dataclass(frozen=True)
class _PredictorSpec:
    """What a worker needs to load the predictor: the model, its sha256, and the options of load_predictor.

    ``options`` holds (name, value) pairs; an array is given as an :class:`_NpyFile` (never the array itself,
    which would travel with every task), files by absolute path.
    """

    model: str
    input_shape: tuple
    backend: str
    options: tuple
    model_sha256: str

    def load(self):
        from gamornet.inference.predictor import load_predictor

        options = {name: value.load() if isinstance(value, _NpyFile) else value for name, value in self.options}
        return load_predictor(self.model, self.input_shape, self.backend, **options)

    def option(self, name):
        return dict(self.options).get(name)


@dataclasses.dataclass(frozen=True)
class _Settings:
    """Everything a run is made with that changes its rows: a rerun on the same folder must match it."""

    spec: _PredictorSpec
    thresholds: Thresholds
    thresholds_name: str
    partition_size: int
    hdu: int
    skip_bad: bool

    def record(self):
        return {
            "model_sha256": self.spec.model_sha256,
            "backend": self.spec.backend,
            "input_shape": list(self.spec.input_shape),
            "predictor_options": {name: _option_record(value) for name, value in self.spec.options},
            "thresholds": {"disk": self.thresholds.disk, "bulge": self.thresholds.bulge,
                           "disk_must_lead": bool(self.thresholds.disk_must_lead)},
            "partition_size": self.partition_size,
            "hdu": self.hdu,
            "skip_bad": self.skip_bad,
        }

    def describe_thresholds(self):
        thresholds = self.thresholds
        text = f"p_disk >= {thresholds.disk}, p_bulge >= {thresholds.bulge}" + (
            ", p_disk leading" if thresholds.disk_must_lead else "")
        return f"{self.thresholds_name} ({text})" if self.thresholds_name else text


def _mismatch_message(folder, recorded, wanted, what):
    differences = [f"{key}: {recorded.get(key)!r} there, {wanted.get(key)!r} now"
                   for key in sorted(set(recorded) | set(wanted)) if recorded.get(key) != wanted.get(key)]
    return (
        f"the output folder {folder!r} holds part of a run made with {what}: " + "; ".join(differences)
        + ". Rerun with the same model, settings and inputs to finish it, or write to another folder (or remove "
        "this one to start again)"
    )


# --------------------------------------------------------------------------- the manifest


def _now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


def _parts_on_disk(folder):
    """{partition id: file name} of the finished parts in ``folder``."""
    found = {}
    for name in os.listdir(folder):
        match = _PART_NAME.match(name)
        if match:
            found[match["id"]] = name
    return found


def _entry_from_part(path):
    """The manifest entry of a part found on disk but not in the manifest (its run stopped before saving it)."""
    import pyarrow.parquet as pq

    metadata = pq.read_metadata(path)
    partition = json.loads(metadata.metadata[PARTITION_KEY.encode()])
    return {"index": partition["index"], "file": os.path.basename(path), "rows": metadata.num_rows,
            "bad": partition["bad"], "blank": partition["blank"], "run": None, "finished_at": None,
            "worker": None, "worker_model_loads": None}


class _Manifest:
    """``_manifest.json``: the settings of a run and its finished partitions, rewritten atomically."""

    def __init__(self, folder, settings, plan):
        self.folder = folder
        self.path = os.path.join(folder, MANIFEST_NAME)
        self.data = {"gamornet_manifest": _MANIFEST_VERSION, "settings": settings, "plan": plan,
                     "provenance": None, "runs": [], "finished": {}}
        self._saved_at = 0.0
        self._save_seconds = 0.0

    @classmethod
    def open(cls, folder, settings, plan, partitions):
        """The manifest of ``folder``, checked against this run and brought up to date with the parts on disk."""
        manifest = cls(folder, settings, plan)
        if os.path.exists(manifest.path):
            try:
                with open(manifest.path, encoding="utf-8") as stream:
                    recorded = json.load(stream)
                recorded["settings"], recorded["plan"], recorded["finished"]  # noqa: B018 - the keys must exist
            except (ValueError, KeyError, TypeError) as error:
                raise ValueError(f"the manifest {manifest.path!r} is damaged ({error}); remove the folder "
                                 f"{folder!r} to start again") from None
            if recorded["settings"] != settings:
                raise ResumeMismatchError(_mismatch_message(folder, recorded["settings"], settings,
                                                            "another model or other settings"))
            if recorded["plan"] != plan:
                raise ResumeMismatchError(_mismatch_message(folder, recorded["plan"], plan, "other inputs"))
            manifest.data = recorded
        manifest.reconcile(partitions)
        return manifest

    def reconcile(self, partitions):
        """Parts on disk are the truth: add those the manifest missed, drop entries whose part is gone."""
        on_disk = _parts_on_disk(self.folder)
        planned = {partition.id: partition for partition in partitions}
        finished = self.data["finished"]
        for partition_id in [key for key in finished if key not in on_disk or key not in planned]:
            del finished[partition_id]
        for partition_id, name in on_disk.items():
            if partition_id in planned and partition_id not in finished:
                finished[partition_id] = _entry_from_part(os.path.join(self.folder, name))

    @property
    def finished(self):
        return self.data["finished"]

    def start_run(self, command_line):
        self.data["runs"].append({"started_at": _now(), "command_line": command_line, "partitions_done": 0})
        return len(self.data["runs"])

    def record(self, result):
        run = self.data["runs"][-1]
        run["partitions_done"] += 1
        entry = {key: result[key] for key in ("index", "file", "rows", "bad", "blank", "worker",
                                               "worker_model_loads")}
        self.finished[result["id"]] = dict(entry, run=len(self.data["runs"]), finished_at=_now())
        interval = max(_MANIFEST_INTERVAL_S, self._save_seconds / _MANIFEST_TIME_SHARE)
        if time.monotonic() - self._saved_at > interval:
            self.save()

    def save(self):
        start = time.monotonic()
        with atomic_write(self.path, encoding="utf-8") as stream:
            json.dump(self.data, stream, indent=1)
        self._saved_at = time.monotonic()
        self._save_seconds = self._saved_at - start


# --------------------------------------------------------------------------- on the workers

_worker_predictors = collections.OrderedDict()
_worker_lock = threading.Lock()
_worker_loads = 0


def _worker_predictor(spec):
    """The predictor of ``spec`` in this worker process: loaded by the first task that needs it, then kept."""
    global _worker_loads
    key = repr(spec)
    with _worker_lock:
        predictor = _worker_predictors.get(key)
        if predictor is None:
            predictor = spec.load()
            if predictor.model_sha256 != spec.model_sha256:
                raise ModelFileError(
                    f"the worker on {socket.gethostname()} reads the model {spec.model!r} from "
                    f"{predictor.model_path!r}, whose sha256 is {predictor.model_sha256}, but the run was started "
                    f"with a model of sha256 {spec.model_sha256}: give every worker the same model file (a shared "
                    "GAMORNET_CACHE_DIR, or a model file on a shared file system)"
                )
            _worker_predictors[key] = predictor
            _worker_loads += 1
            while len(_worker_predictors) > 2:
                _worker_predictors.popitem(last=False)
        return predictor


def _describe(spec):
    """Task: load the predictor on a worker; return its provenance, extra columns and their types."""
    predictor = _worker_predictor(spec)
    types = {}
    if predictor.columns:
        probe = np.random.default_rng(0).normal(100.0, 10.0, (1,) + tuple(spec.input_shape)).astype(np.float32)
        result = predictor.predict_batch(probe)
        types = {name: np.asarray(result.columns[name]).dtype.str for name in predictor.columns}
    return {"provenance": _jsonable(predictor.provenance()), "columns": list(predictor.columns),
            "column_types": types}


@dataclasses.dataclass(frozen=True)
class _Job:
    """What every partition task of a run shares."""

    settings: _Settings
    batch_size: int
    folder: str
    columns: tuple
    column_types: tuple
    metadata: tuple


def _predict_partition(job, partition):
    """Task: classify one partition into its Parquet file; return what the manifest records of it."""
    from gamornet.inference.pipeline import Outcome, classify_stream

    settings = job.settings
    predictor = _worker_predictor(settings.spec)
    reader = io.ImageReader(list(partition.inputs), settings.spec.input_shape, batch_size=job.batch_size,
                            hdu=settings.hdu, skip_bad=settings.skip_bad)
    table = ParquetTable(dict(job.metadata), job.columns, dict(job.column_types))
    outcome = Outcome()
    classify_stream(reader, predictor, settings.thresholds, table, False, outcome)
    bad = [str(item) for item in outcome.bad_inputs]
    table.metadata[PARTITION_KEY] = json.dumps({"index": partition.index, "id": partition.id, "bad": bad,
                                                "blank": outcome.blank_sources})
    table.write(os.path.join(job.folder, partition.file_name))
    return {"id": partition.id, "index": partition.index, "file": partition.file_name, "rows": table.rows,
            "bad": bad, "blank": outcome.blank_sources, "worker": f"{socket.gethostname()}:{os.getpid()}",
            "worker_model_loads": _worker_loads}


# --------------------------------------------------------------------------- the cluster


def _cores():
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


@contextlib.contextmanager
def _sigint_ignored():
    """Worker processes started meanwhile ignore Ctrl-C, which the terminal sends them too: the client stops them."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def local_cluster(n_workers):
    """A Dask ``LocalCluster`` of ``n_workers`` processes on 127.0.0.1, one task at a time each.

    The cores are shared out: each worker's TensorFlow uses
    ``cores // n_workers`` threads (``TF_NUM_INTRAOP_THREADS``, unless set).

    Parameters
    ----------
    n_workers : int

    Returns
    -------
    distributed.LocalCluster
        Close it (or use it as a context manager) to stop the workers.
    """
    from distributed import LocalCluster

    n_workers = _checks.check_positive_int(n_workers, "workers")
    threads = str(max(1, _cores() // n_workers))
    env = {name: os.environ.get(name, threads) for name in ("TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")}
    with _sigint_ignored():
        # The dashboard (and the scheduler's HTTP server, which runs anyway) on a free port of 127.0.0.1.
        return LocalCluster(n_workers=n_workers, threads_per_worker=1, processes=True, host="127.0.0.1",
                            dashboard_address="127.0.0.1:0", env=env)


@contextlib.contextmanager
def _connected(client):
    """A ``distributed.Client`` for ``client`` (see :func:`predict_catalogue`); what this opens, it closes."""
    from distributed import Client, default_client

    if client is None:
        try:
            client = default_client()
        except ValueError:  # no client yet in this process
            client = _cores()
    if isinstance(client, Client):
        yield client
        return
    with contextlib.ExitStack() as stack:
        if isinstance(client, str):
            try:
                dask_client = stack.enter_context(Client(client))
            except OSError as error:
                raise OSError(f"cannot reach the Dask scheduler at {client!r} ({error}); check the address, and that "
                              "the scheduler runs (dask scheduler)") from None
        else:
            # A worker that has imported TensorFlow takes seconds to exit, and its nanny then stops it with a
            # warning: harmless once the work is done, so not shown while this cluster closes.
            nanny_log = logging.getLogger("distributed.nanny")
            stack.callback(nanny_log.setLevel, nanny_log.level)
            cluster = stack.enter_context(local_cluster(client))
            stack.callback(nanny_log.setLevel, logging.ERROR)
            dask_client = stack.enter_context(Client(cluster))
        yield dask_client


class _InFlightLimit:
    """How many partition tasks to keep submitted: two per worker thread, at least 8.

    So no worker waits for its next task, and the scheduler never holds a
    whole survey's tasks. The number of threads is asked of the scheduler
    every few seconds: clusters grow and shrink.
    """

    def __init__(self, client):
        self.client = client
        self.asked_at = None
        self.value = 8

    def __call__(self):
        if self.asked_at is None or time.monotonic() - self.asked_at > 5.0:
            self.value = max(8, 2 * sum(self.client.nthreads().values()))
            self.asked_at = time.monotonic()
        return self.value


def _classify_partitions(client, job, todo, manifest, bar):
    """Run the partition tasks, a bounded number at a time, recording each finished one in the manifest."""
    from distributed import as_completed

    token = os.urandom(4).hex()
    pending = iter(todo)
    in_flight = set()
    completed = as_completed()
    limit = _InFlightLimit(client)
    done = 0

    def top_up():
        while len(in_flight) < limit():
            partition = next(pending, None)
            if partition is None:
                return
            future = client.submit(_predict_partition, job, partition, pure=False,
                                   key=f"gamornet-partition-{partition.index}-{partition.id}-{token}")
            future.partition = partition
            in_flight.add(future)
            completed.add(future)

    try:
        top_up()
        for future in completed:
            result = future.result()
            in_flight.discard(future)
            manifest.record(result)
            done += future.partition.images
            bar.update(done)
            top_up()
    except BaseException:
        client.cancel(list(in_flight))
        raise


# --------------------------------------------------------------------------- outputs


def _output_layout(output):
    """(kind, folder of parts): 'parquet' (the folder itself), or 'csv' / 'fits' (parts in '<output>.parts')."""
    if not isinstance(output, (str, os.PathLike)):
        raise TypeError(f"output must be a path. Received an object of type {type(output).__name__}")
    text = os.fspath(output)
    bare = text.rstrip("/" + os.sep) or text
    lower = bare.lower()
    if text.endswith(("/", os.sep)) or lower.endswith(".parquet") or os.path.isdir(text):
        kind, folder = "parquet", bare
    elif lower.endswith(".csv"):
        kind, folder = "csv", bare + ".parts"
    elif lower.endswith(_FITS_OUTPUTS):
        kind, folder = "fits", bare + ".parts"
    else:
        raise ValueError(
            "output must be a Parquet folder (a name ending in .parquet or /), or a table ending in .csv or .fits. "
            f"Received: {text!r}"
        )
    parent = os.path.dirname(os.path.abspath(folder))
    if not os.path.isdir(parent):
        raise FileNotFoundError(f"the folder {parent!r}, where the output goes, does not exist")
    if os.path.isfile(folder) and kind == "parquet":
        raise FileExistsError(f"the output {folder!r} is a file; a Parquet output is a folder: give a new name")
    return kind, folder


def _prepare_folder(folder):
    """Create the output folder, or accept an existing one that is empty or holds a manifest."""
    if not os.path.isdir(folder):
        os.mkdir(folder)
        return
    if os.path.exists(os.path.join(folder, MANIFEST_NAME)):
        return
    others = sorted(name for name in os.listdir(folder) if not is_temporary_name(name))
    if others:
        raise ValueError(
            f"the output folder {folder!r} holds files ({', '.join(others[:3])}{' ...' if len(others) > 3 else ''}) "
            f"but no {MANIFEST_NAME}: it is not the output of an earlier run. Give a new or empty folder"
        )


def _remove_stale_temporaries(folder):
    """Remove what killed writers left in ``folder`` (files of processes that still run are kept)."""
    targets = set()
    for name in os.listdir(folder):
        if is_temporary_name(name):
            match = re.match(r"^\.tmp-(.+?\.(?:parquet|json))-", name)
            if match:
                targets.add(match[1])
    for target in targets:
        remove_stale_temporaries(os.path.join(folder, target))


def _dataset_metadata(provenance):
    return {PROVENANCE_KEY: json.dumps(provenance)}


def _write_dataset_metadata(folder, partitions, provenance):
    """``_common_metadata`` (schema and provenance) and ``_metadata`` (and the row groups of every part)."""
    import pyarrow.parquet as pq

    collected = []
    for partition in partitions:
        metadata = pq.read_metadata(os.path.join(folder, partition.file_name))
        metadata.set_file_path(partition.file_name)
        collected.append(metadata)
    schema = pq.read_schema(os.path.join(folder, partitions[0].file_name))
    schema = schema.with_metadata(_dataset_metadata(provenance))
    with atomic_path(os.path.join(folder, "_common_metadata"), suffix=".parquet") as temporary:
        pq.write_metadata(schema, temporary)
    with atomic_path(os.path.join(folder, "_metadata"), suffix=".parquet") as temporary:
        pq.write_metadata(schema, temporary, metadata_collector=collected)


def _add_part(table, path, columns):
    import pyarrow.parquet as pq

    part = pq.read_table(path)
    probabilities = np.column_stack([part[name].to_numpy() for name in ("p_disk", "p_indet", "p_bulge")])
    extra = {name: part[name].to_numpy(zero_copy_only=False) for name in columns}
    table.add(part["source"].to_pylist(), probabilities.reshape(-1, 3), part["class"].to_pylist(), extra)


def _concatenate(folder, partitions, output, kind, columns, provenance, settings):
    """Write the parts, in order, into one CSV or FITS table."""
    if kind == "csv":
        with atomic_write(output, newline="", encoding="utf-8") as stream:
            table = CsvTable(stream, columns)
            for partition in partitions:
                _add_part(table, os.path.join(folder, partition.file_name), columns)
        return
    meta = {"MODEL": str(provenance["model"])[-68:], "MODELSHA": provenance["model_sha256"],
            "BACKEND": provenance["backend"], "THRESH": settings.describe_thresholds()[:68]}
    table = FitsTable(meta, columns)
    for partition in partitions:
        _add_part(table, os.path.join(folder, partition.file_name), columns)
    table.write(output)


def read_provenance(path):
    """The provenance recorded in a Parquet output: a part file, ``_metadata``, or the output folder.

    Parameters
    ----------
    path : str
        A file written by :func:`predict_catalogue`, or its output folder.

    Returns
    -------
    dict
        gamornet version, model (as given), its path and sha256, backend,
        input shape, the predictor's options, thresholds, partition size and
        the command line.

    Raises
    ------
    ValueError
        The file holds no gamornet provenance.
    """
    import pyarrow.parquet as pq

    path = os.fspath(path)
    if os.path.isdir(path):
        names = ["_common_metadata"] + sorted(_parts_on_disk(path).values())
        existing = [name for name in names if os.path.exists(os.path.join(path, name))]
        if not existing:
            raise ValueError(f"{path!r} holds no Parquet file written by gamornet")
        path = os.path.join(path, existing[0])
    metadata = pq.read_schema(path).metadata or {}
    if PROVENANCE_KEY.encode() not in metadata:
        raise ValueError(f"{path!r} holds no gamornet provenance (no {PROVENANCE_KEY!r} key in its metadata)")
    return json.loads(metadata[PROVENANCE_KEY.encode()])


# --------------------------------------------------------------------------- the run


@dataclasses.dataclass(frozen=True)
class _Summary:
    output: str
    images: int
    rows: int
    partitions: int
    done_now: int
    done_before: int
    bad: list
    blank: list


def _stop_message(bad, manifest, partitions, folder):
    finished = len(manifest.finished)
    return (
        f"cannot classify {bad.source!r}: {bad.reason}. The {finished} of {len(partitions)} partitions finished "
        f"are kept in {folder!r}. Fix or remove this input (another input list is refused on that folder), or "
        "skip bad inputs (--skip-bad, or skip_bad=True) and list them at the end; then run again"
    )


def _run_on_cluster(client, settings, manifest, todo, batch_size, progress, command_line):
    """Describe the model on a worker, then classify the partitions of ``todo`` on the cluster."""
    with _connected(client) as dask_client:
        description = dask_client.submit(_describe, settings.spec, pure=False).result()
        provenance = dict(description["provenance"], **_run_provenance(settings, command_line))
        manifest.data["provenance"] = provenance
        manifest.data["columns"] = description["columns"]
        manifest.save()
        metadata = _dataset_metadata(provenance)
        job = _Job(settings, batch_size, os.path.abspath(manifest.folder), tuple(description["columns"]),
                   tuple(description["column_types"].items()), tuple(metadata.items()))
        with progress_bar(sum(partition.images for partition in todo), "Classifying", enabled=progress) as bar:
            _classify_partitions(dask_client, job, todo, manifest, bar)


def _run_provenance(settings, command_line):
    return {"thresholds": settings.record()["thresholds"], "thresholds_description": settings.describe_thresholds(),
            "predictor_options": settings.record()["predictor_options"], "partition_size": settings.partition_size,
            "hdu": settings.hdu, "skip_bad": settings.skip_bad, "command_line": command_line,
            "created": _now()}


def _calibrate_int8_on_the_inputs(settings, partitions):
    """int8 without calibration images: the first images of the inputs, as one process takes them, the same for
    every worker (each would otherwise quantize the network on the images of its own first partition)."""
    spec = settings.spec
    if spec.option("precision") != "int8" or spec.option("calibration_images") is not None:
        return settings
    from gamornet.inference.int8 import DEFAULT_CALIBRATION_SIZE

    inputs, count = [], 0
    for partition in partitions:
        if count >= DEFAULT_CALIBRATION_SIZE:
            break
        inputs += partition.inputs
        count += partition.images
    reader = io.ImageReader(inputs, spec.input_shape, batch_size=DEFAULT_CALIBRATION_SIZE, hdu=settings.hdu,
                            skip_bad=True)
    images = next((batch.images for batch in reader if len(batch.images)), None)
    if images is None:
        raise ValueError("int8 needs calibration images, and the inputs hold no readable image")
    options = dict(spec.options, calibration_images=images)
    return dataclasses.replace(settings, spec=dataclasses.replace(spec, options=tuple(sorted(options.items()))))


def _arrays_to_files(settings, folder):
    """Save the array options (int8's calibration images) as ``_<name>.npy`` in the output folder, where every
    worker reads them, and give them to the workers as :class:`_NpyFile`."""
    options = {}
    for name, value in settings.spec.options:
        if isinstance(value, np.ndarray):
            path = os.path.abspath(os.path.join(folder, f"_{name}.npy"))
            sha256 = _array_sha256(value)
            if not (os.path.exists(path) and _array_sha256(np.load(path)) == sha256):
                with atomic_path(path, suffix=".npy") as temporary:
                    np.save(temporary, value)
            value = _NpyFile(path, sha256, tuple(value.shape))
        options[name] = value
    return dataclasses.replace(settings, spec=dataclasses.replace(settings.spec, options=tuple(options.items())))


def _check_client(client):
    """Refuse what cannot say where to run (without importing Dask: a finished run needs no cluster)."""
    if client is None or isinstance(client, str) or hasattr(client, "submit"):
        return
    if isinstance(client, bool) or not isinstance(client, int) or client < 1:
        raise TypeError(
            "client must be a distributed.Client, a scheduler address ('tcp://HOST:PORT'), a number of local "
            f"worker processes, or None. Received: {client!r}"
        )


def run_partitions(inputs, output, settings, client, batch_size, progress, command_line):
    """Plan, resume, classify what is missing and finish the output; return a :class:`_Summary`."""
    _check_client(client)
    kind, folder = _output_layout(output)
    # Folders and patterns among the inputs must not yield the output, nor the parts of an earlier run.
    own_files = [os.fspath(output)] + ([os.path.join(folder, name) for name in os.listdir(folder)]
                                       if os.path.isdir(folder) else [])
    partitions = plan_partitions(inputs, settings.spec.input_shape, settings.partition_size, settings.hdu,
                                 exclude=own_files)
    if not partitions:
        raise ValueError("the inputs hold no images")
    settings = _calibrate_int8_on_the_inputs(settings, partitions)
    _prepare_folder(folder)
    _remove_stale_temporaries(folder)
    settings = _arrays_to_files(settings, folder)
    manifest = _Manifest.open(folder, settings.record(), _plan_record(partitions, settings.partition_size),
                              partitions)
    todo = [partition for partition in partitions if partition.id not in manifest.finished]
    done_before = len(partitions) - len(todo)
    if todo:
        manifest.start_run(command_line)
        try:
            _run_on_cluster(client, settings, manifest, todo, batch_size, progress, command_line)
        except BaseException as error:
            # Tasks that were running when the run stopped may have finished their parts since.
            manifest.reconcile(partitions)
            if isinstance(error, BadInputError):
                raise BadInputError(_stop_message(error.args[0], manifest, partitions, folder)) from None
            error.kept = (f"{len(manifest.finished)} of {len(partitions)} partitions are finished in {folder!r}; "
                          "run the same command again to do the rest")
            raise
        finally:
            manifest.save()
            _remove_stale_temporaries(folder)
    if todo or not os.path.exists(os.path.join(folder, "_metadata")):
        _write_dataset_metadata(folder, partitions, manifest.data["provenance"])
    if kind != "parquet":
        _concatenate(folder, partitions, os.fspath(output), kind, manifest.data.get("columns", []),
                     manifest.data["provenance"], settings)
        shutil.rmtree(folder)
    entries = manifest.finished.values()
    return _Summary(os.fspath(output), manifest.data["plan"]["images"], sum(entry["rows"] for entry in entries),
                    len(partitions), len(todo), done_before, [bad for entry in entries for bad in entry["bad"]],
                    [source for entry in entries for source in entry["blank"]])


# --------------------------------------------------------------------------- the Python API


def _check_predictor_options(options):
    from gamornet.inference.predictor import load_predictor

    accepted = [name for name, parameter in inspect.signature(load_predictor).parameters.items()
                if parameter.kind == inspect.Parameter.KEYWORD_ONLY and name != "thresholds"]  # predict_catalogue's own
    for name in options:
        if name not in accepted:
            raise TypeError(
                f"predict_catalogue got an unknown option {name!r}: it takes input_shape, backend, thresholds, "
                "batch_size, hdu, skip_bad, progress, command_line and the options of gamornet.load_predictor"
                + (f" ({', '.join(accepted)})" if accepted else " (none today)")
            )


def run_settings(model, input_shape, backend, thresholds, partition_size, hdu, skip_bad, options):
    """Check every argument and resolve the model (fetching a published one once, here); return :class:`_Settings`."""
    if backend not in models.BACKENDS:
        raise ValueError(f"backend must be one of {models.BACKENDS}. Received: backend={backend!r}")
    resolved = models.resolve_model(model, backend, input_shape)
    shape = resolved.input_shape
    partition_size = _checks.check_positive_int(partition_size, "partition_size")
    hdu = _checks.check_hdu(hdu)
    _check_predictor_options(options)
    name = thresholds if isinstance(thresholds, str) else None
    if thresholds is None:
        name = default_thresholds(backend, resolved.data_set, shape)
    resolved = resolve_thresholds(name if thresholds is None else thresholds)
    if options.get("precision") == "bf16":
        # bf16 predicts again in fp32 the galaxies near the boundaries of the classes this run makes.
        options = dict(options, thresholds=(resolved.disk, resolved.bulge, bool(resolved.disk_must_lead)))
    # Published models go by name (each worker finds them in its cache); files by their absolute path.
    for_workers = model if models.is_published_name(model) else os.path.abspath(os.fspath(model))
    # Files given as options (a calibration) go to the workers by absolute path.
    options = {name: os.path.abspath(os.fspath(value)) if isinstance(value, (str, os.PathLike))
               and os.path.isfile(value) else value for name, value in options.items()}
    spec = _PredictorSpec(for_workers, shape, backend, tuple(sorted(options.items())),
                          resolved.sha256)
    return _Settings(spec, resolved, name, partition_size, hdu, bool(skip_bad))


def predict_catalogue(inputs, model, output, client=None, partition_size=DEFAULT_PARTITION_SIZE, *,
                      input_shape=None, backend="keras", thresholds=None, batch_size=64, hdu=None, skip_bad=False,
                      progress=False, command_line=None, **predictor_options):
    """Classify a catalogue of images on a Dask cluster into a Parquet folder (or a CSV or FITS table).

    A rerun with the same arguments does only the partitions that are
    missing (after a stop, a crash, or a time limit).

    Parameters
    ----------
    inputs : str or list of str
        FITS files, folders, glob patterns, FITS cubes, ``.npy`` arrays, and
        ranges of arrays and cubes (``'stack.npy[0:100000]'``), as for
        :class:`gamornet.io.images.ImageReader`.
    model : str or os.PathLike
        A published model (``'SDSS_tl'`` ...) or a model file, as for
        :func:`gamornet.load_predictor`. Every worker must reach it: a
        published model through the cache (``GAMORNET_CACHE_DIR``, shared or
        filled on each node), a file on a shared file system.
    output : str or os.PathLike
        A Parquet folder (a name ending in ``.parquet`` or ``/``, or an
        existing folder), or a table ending in ``.csv`` or ``.fits``, written
        from the parts (kept meanwhile in ``<output>.parts/``) once all are
        finished.
    client : distributed.Client, str, int or None
        Where to run: a ``Client``; a scheduler address
        (``'tcp://HOST:PORT'``); a number of worker processes for a
        ``LocalCluster`` on this machine, started and stopped here; or None:
        the current Dask client if there is one, else a ``LocalCluster`` of
        one worker per core. No cluster is started when every partition is
        already finished.
    partition_size : int
        Images per partition: per task and per Parquet file.
    input_shape, backend
        As for :func:`gamornet.load_predictor`.
    thresholds : str, tuple or gamornet.science.classify.Thresholds, optional
        The rule that gives the class column (see
        :func:`gamornet.science.classify.classify`); default: the handbook set of the
        backend and data set.
    batch_size : int
        Images per batch on a worker (does not change the results).
    hdu : int, optional
        The FITS HDU holding the images.
    skip_bad : bool
        Skip bad inputs (unreadable, of the wrong shape, NaN pixels) and list
        them in the manifest, instead of stopping.
    progress : bool
        Show a progress bar.
    command_line : list of str, optional
        Recorded in the provenance (``gamornet predict`` gives its own).
    **predictor_options
        Further options of :func:`gamornet.load_predictor`.

    Returns
    -------
    str
        ``output``.

    Raises
    ------
    gamornet.errors.ResumeMismatchError
        ``output`` holds part of a run made with another model, other
        settings or other inputs.
    gamornet.errors.BadInputError
        A bad input stopped the run (without ``skip_bad``); the finished
        partitions are kept.
    ValueError, TypeError, OSError
        Invalid arguments, inputs that hold no images, an unreachable
        scheduler, an unusable model file (as :func:`gamornet.load_predictor`).
    """
    settings = run_settings(model, input_shape, backend, thresholds, partition_size, hdu, skip_bad, predictor_options)
    batch_size = _checks.check_positive_int(batch_size, "batch_size")
    return run_partitions(inputs, output, settings, client, batch_size, progress, command_line).output
