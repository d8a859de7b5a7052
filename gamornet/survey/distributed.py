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
- ``_manifest.json``: the settings of the run, and the partitions finished,
  each with the identity of the files it read (:mod:`gamornet.survey.manifest`);
- ``_metadata`` and ``_common_metadata``, once every partition is finished:
  the schema, the provenance and the row groups of every part, which pyarrow,
  pandas and Dask read;
- ``_lock.json`` while a run uses the folder (:mod:`gamornet._utils.lockfile`).

Running the same call again does only the partitions that are missing; a
different model, other settings (the predictor's columns included), other
inputs, or inputs of finished partitions rewritten since, on an existing
folder are refused (:class:`gamornet.errors.ResumeMismatchError`;
``redo_changed=True`` classifies the partitions of rewritten files again).
A second run on a folder in use is refused
(:class:`gamornet.errors.FolderInUseError`). Nothing is written into the
folder before the work starts. A worker that dies
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
from gamornet._utils.lockfile import LockFile
from gamornet._utils.progress import progress_bar
from gamornet.io.tables import CsvTable, FitsTable, ParquetTable
from gamornet.science.classify import Thresholds, default_thresholds, resolve_thresholds
from gamornet.errors import BadInputError, ModelFileError, ResumeMismatchError
from gamornet.survey.manifest import (MANIFEST_NAME, PARTITION_KEY, Manifest, file_identity, identity_sha256, now,
                                      parts_on_disk)

__all__ = ["DEFAULT_PARTITION_SIZE", "LOCK_NAME", "MANIFEST_NAME", "Partition", "local_cluster", "plan_partitions",
           "run_partitions", "run_settings", "predict_catalogue", "read_provenance"]

#: Images per partition (one Dask task, one Parquet file) unless told otherwise.
DEFAULT_PARTITION_SIZE = 4096
#: The lock file of an output folder, there while a run uses the folder (see :mod:`gamornet._utils.lockfile`).
LOCK_NAME = "_lock.json"
#: The key of the Parquet file metadata that holds the provenance (JSON).
PROVENANCE_KEY = "gamornet"

# A FITS file larger than this many single-precision images is opened to count its planes (a cube, which
# is then split into ranges); smaller files count one image each, without being opened.
_CUBE_IMAGES = 64
_FITS_OUTPUTS = (".fits", ".fit", ".fits.gz", ".fit.gz")
# A source of an image of an array or a cube: 'path[index]'.
_INDEXED_SOURCE = re.compile(r"^(?P<path>.*)(?P<index>\[\d+\])$")


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
    files : tuple of (str, str)
        Its files, once each, in order: (absolute path, path as given), the
        second naming its images in the ``source`` column (as ``gamornet
        predict`` does in one process).
    identity : tuple
        ``[size in bytes, modification time in ns]`` of each of ``files`` when
        the plan was made (None for a file that could not be found): what a
        rerun compares with what the partition's worker read.
    """

    index: int
    inputs: tuple
    images: int
    files: tuple = ()
    identity: tuple = dataclasses.field(default=(), compare=False)

    @property
    def id(self):
        """20 hexadecimal digits derived from the inputs (paths, ranges, and the paths as given): the same inputs,
        the same id."""
        text = json.dumps([list(self.inputs), [shown for _, shown in self.files]])
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]

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


def _image_range(item, input_shape, hdu, size):
    """(first, last) image of an input that can be split into ranges (an array or a cube), else None."""
    if item.kind == "npy":
        try:
            shape = io.read_npy_header(item.path)[0]
        except Exception:  # noqa: BLE001 - reported as a bad file when read
            return None
        return item.bounds(int(shape[0])) if len(shape) >= 3 else None
    image_bytes = 4 * int(np.prod(input_shape))
    if not item.ranged and (size is None or size <= _CUBE_IMAGES * image_bytes):
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
    plan = _Plan(_checks.check_positive_int(partition_size, "partition_size"))
    for item in io.expand_inputs_with_ranges(inputs, exclude):
        shown = item.path
        item = dataclasses.replace(item, path=os.path.abspath(item.path))
        identity = file_identity(item.path)  # one stat per file: the identity, and the size that tells a cube
        bounds = _image_range(item, shape, hdu, identity and identity[0])
        if bounds is None:
            plan.add(str(item), item.path, shown, identity, 1)
            continue
        first, last = bounds
        while first < last:
            take = min(plan.size - plan.filled, last - first)
            plan.add(str(dataclasses.replace(item, start=first, stop=first + take)), item.path, shown, identity, take)
            first += take
    plan.close()
    return plan.partitions


class _Plan:
    """Partitions being filled, in input order."""

    def __init__(self, size):
        self.size, self.partitions, self.current, self.files, self.filled = size, [], [], {}, 0

    def add(self, text, path, shown, identity, images):
        """Add an input (``text``: a file, or a range of one) of ``images`` images; close the partition when full."""
        self.current.append(text)
        self.files.setdefault(path, (shown, identity))
        self.filled += images
        if self.filled >= self.size:
            self.close()

    def close(self):
        if self.current:
            files = tuple((path, shown) for path, (shown, _) in self.files.items())
            identity = tuple(identity for _, identity in self.files.values())
            self.partitions.append(Partition(len(self.partitions), tuple(self.current), self.filled, files, identity))
        self.current, self.files, self.filled = [], {}, 0


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
    if isinstance(value, dict):  # a model card
        return {"json_sha256": hashlib.sha256(json.dumps(_jsonable(value), sort_keys=True).encode()).hexdigest()}
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
    """Everything a run is made with: :meth:`record` holds what changes its rows, which a rerun on the same folder
    must match. ``skip_bad`` is not in it: a partition that meets a bad input without it writes no part, so the parts
    of a run with and without it are the same."""

    spec: _PredictorSpec
    thresholds: Thresholds
    thresholds_name: str
    partition_size: int
    hdu: int
    skip_bad: bool
    thresholds_file: str = None

    def record(self):
        return {
            "model_sha256": self.spec.model_sha256,
            "backend": self.spec.backend,
            "input_shape": list(self.spec.input_shape),
            # No preprocessing or calibration (None) is recorded as nothing, as before model folders had them.
            # The preprocessing is recorded as its settings, readable; a model card (also a dict) by its sha256.
            "predictor_options": {name: _jsonable(value) if name == "preprocessing" else _option_record(value)
                                  for name, value in self.spec.options
                                  if not (name in ("preprocessing", "calibration") and value is None)},
            "thresholds": {"disk": self.thresholds.disk, "bulge": self.thresholds.bulge,
                           "disk_must_lead": bool(self.thresholds.disk_must_lead)},
            "partition_size": self.partition_size,
            "hdu": self.hdu,
        }

    def describe_applied(self):
        """What the workers apply, in words (preprocessing, calibration, thresholds, each with its file)."""
        from gamornet.models.folder import describe_applied
        from gamornet.science.calibration import load_calibration

        calibration = self.spec.option("calibration")
        loaded = None if calibration is None else load_calibration(calibration, self.spec.model_sha256)
        return describe_applied((self.spec.option("preprocessing"), None), (loaded, calibration),
                                (self.describe_thresholds(), self.thresholds_file))

    def describe_thresholds(self):
        thresholds = self.thresholds
        text = f"p_disk >= {thresholds.disk}, p_bulge >= {thresholds.bulge}" + (
            ", p_disk leading" if thresholds.disk_must_lead else "")
        return f"{self.thresholds_name} ({text})" if self.thresholds_name else text


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


class _ShownAs:
    """A reader whose sources name the files as the user gave them (``cutouts/g0.fits``), not by the absolute paths
    the worker reads (as ``gamornet predict`` does in one process)."""

    def __init__(self, reader, files):
        self.reader = reader
        self.names = dict(files)

    def __getattr__(self, name):
        return getattr(self.reader, name)

    def shown(self, source):
        if source in self.names:
            return self.names[source]
        match = _INDEXED_SOURCE.match(source)
        if match and match["path"] in self.names:
            return self.names[match["path"]] + match["index"]
        return source

    def __iter__(self):
        for batch in self.reader:
            batch.sources = [self.shown(source) for source in batch.sources]
            batch.bad = [dataclasses.replace(bad, source=self.shown(bad.source)) for bad in batch.bad]
            yield batch


def _predict_partition(job, partition):
    """Task: classify one partition into its Parquet file; return what the manifest records of it."""
    from gamornet.inference.pipeline import Outcome, classify_stream

    settings = job.settings
    predictor = _worker_predictor(settings.spec)
    # What this worker reads: each file's size and modification time, taken before it is read.
    identity = [file_identity(path) for path, _ in partition.files]
    inputs_sha256 = identity_sha256([path for path, _ in partition.files], identity)
    reader = io.ImageReader(list(partition.inputs), settings.spec.input_shape, batch_size=job.batch_size,
                            hdu=settings.hdu, skip_bad=settings.skip_bad)
    table = ParquetTable(dict(job.metadata), job.columns, dict(job.column_types))
    outcome = Outcome()
    classify_stream(_ShownAs(reader, partition.files), predictor, settings.thresholds, table, False, outcome)
    bad = [str(item) for item in outcome.bad_inputs]
    table.metadata[PARTITION_KEY] = json.dumps({"index": partition.index, "id": partition.id, "bad": bad,
                                                "blank": outcome.blank_sources, "inputs_sha256": inputs_sha256,
                                                "identity": identity})
    table.write(os.path.join(job.folder, partition.file_name))
    return {"id": partition.id, "index": partition.index, "file": partition.file_name, "rows": table.rows,
            "bad": bad, "blank": outcome.blank_sources, "inputs_sha256": inputs_sha256,
            "worker": f"{socket.gethostname()}:{os.getpid()}", "worker_model_loads": _worker_loads}


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


def _classify_partitions(client, job, todo, manifest, bar, check_lock):
    """Run the partition tasks, a bounded number at a time, recording each finished one in the manifest
    (``check_lock()`` raises when the folder's lock was taken over by another run)."""
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
            check_lock()
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


def _make_folder(folder):
    """Create the output folder unless it exists; return whether this run created it."""
    try:
        os.mkdir(folder)
    except FileExistsError:
        return False
    return True


def _check_folder(folder):
    """Accept an output folder that is empty, or holds a manifest (or only what a run writes before it starts)."""
    if os.path.exists(os.path.join(folder, MANIFEST_NAME)):
        return
    others = sorted(name for name in os.listdir(folder) if not is_temporary_name(name)
                    and not name.startswith(LOCK_NAME) and not re.match(r"^_\w+\.npy$", name))
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


def _columns_of(schema):
    return ", ".join(f"{field.name} ({field.type})" for field in schema)


def _write_dataset_metadata(folder, partitions, provenance):
    """``_common_metadata`` (schema and provenance) and ``_metadata`` (and the row groups of every part); parts of
    different columns (written by an earlier gamornet, which did not keep them from changing) are refused."""
    import pyarrow.parquet as pq

    collected, schema = [], None
    for partition in partitions:
        metadata = pq.read_metadata(os.path.join(folder, partition.file_name))
        part_schema = metadata.schema.to_arrow_schema()
        if schema is None:
            schema, first = part_schema, partition.file_name
        elif not part_schema.equals(schema, check_metadata=False):
            raise ValueError(
                f"the parts of {folder!r} do not have the same columns: {first} has {_columns_of(schema)}; "
                f"{partition.file_name} has {_columns_of(part_schema)}. They were made with different settings (a "
                "model card added or removed between runs): remove the parts whose columns are not the ones you "
                "want and run the same command again, which classifies them again")
        metadata.set_file_path(partition.file_name)
        collected.append(metadata)
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
        names = ["_common_metadata"] + sorted(parts_on_disk(path).values())
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
    redone: int = 0


def _run_provenance(settings, command_line):
    return {"thresholds": settings.record()["thresholds"], "thresholds_description": settings.describe_thresholds(),
            "predictor_options": settings.record()["predictor_options"], "partition_size": settings.partition_size,
            "hdu": settings.hdu, "skip_bad": settings.skip_bad, "command_line": command_line,
            "created": now()}


class _Run:
    """One run on an output folder, from taking its lock to giving it back.

    Nothing is written into the folder until the work starts (:meth:`start`: a worker has loaded the predictor and
    the first partition is about to be submitted): a run that never starts (a scheduler out of reach, a predictor
    that cannot load on the workers) leaves the folder as it found it, and removes it if it created it.
    """

    def __init__(self, output, kind, folder, partitions, settings, command_line):
        self.output, self.kind, self.folder = os.fspath(output), kind, folder
        self.partitions, self.settings, self.command_line = partitions, settings, command_line
        self.created = _make_folder(folder)
        self.written = []  # files written before the work started, removed if it never does
        self.lock = LockFile(os.path.join(folder, LOCK_NAME), f"the output folder {folder!r}", command_line)
        self.manifest, self.changed, self.started, self.complete = None, [], False, False

    def __enter__(self):
        try:
            self.lock.acquire()
        except BaseException:
            self._remove_folder_if_created()
            raise
        return self

    def __exit__(self, *exc_info):
        self.lock.release()
        if self.manifest is None or not self.manifest.on_disk:
            for path in self.written:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)
            self._remove_folder_if_created()

    def _remove_folder_if_created(self):
        if self.created:
            with contextlib.suppress(OSError):
                os.rmdir(self.folder)

    def open(self, redo_changed):
        """Check the folder, its settings and the identity of the inputs of its finished partitions; return the
        partitions to classify."""
        _check_folder(self.folder)
        _remove_stale_temporaries(self.folder)
        self.manifest = Manifest.open(self.folder, self.settings.record(),
                                      _plan_record(self.partitions, self.settings.partition_size), self.partitions)
        # Only once the settings are the folder's: the workers read the array options from files in it.
        self.settings = _arrays_to_files(self.settings, self.folder, self.written)
        self.changed = self.manifest.changed(self.partitions)
        if self.changed and not redo_changed:
            finished = len(self.manifest.finished)
            raise ResumeMismatchError(
                f"the inputs of {len(self.changed)} of the {finished} finished partitions in {self.folder!r} changed "
                f"since they were classified (another size or modification time): "
                f"{self.manifest.describe_changes(self.changed)}. Their rows were made from the files as they were. "
                "Run the same command with --redo-changed (redo_changed=True) to classify these partitions again, or "
                "write to another folder")
        changed = {partition.id for partition in self.changed}
        return [partition for partition in self.partitions
                if partition.id not in self.manifest.finished or partition.id in changed]

    def start(self, description):
        """The work starts: check the predictor's columns, then write the manifest (and forget changed parts)."""
        types = description["column_types"]
        self.manifest.check_columns({name: types.get(name) for name in description["columns"]})
        self.manifest.forget(self.changed)
        self.manifest.start_run(self.command_line, self.settings.skip_bad)
        self.manifest.data["provenance"] = dict(description["provenance"],
                                                **_run_provenance(self.settings, self.command_line))
        self.manifest.save()
        self.started = True

    def finish(self, rewrite):
        """Write ``_metadata`` (when parts were written, or it is missing), and the CSV or FITS table."""
        provenance = self.manifest.data["provenance"]
        if rewrite or not os.path.exists(os.path.join(self.folder, "_metadata")):
            _write_dataset_metadata(self.folder, self.partitions, provenance)
        if self.kind != "parquet":
            _concatenate(self.folder, self.partitions, self.output, self.kind,
                         list(self.manifest.data["settings"]["columns"]), provenance, self.settings)
        self.complete = True
        if self.kind != "parquet":
            shutil.rmtree(self.folder)

    def kept(self):
        """What a stopped run leaves, in words, and what to do."""
        finished, total = len(self.manifest.finished), len(self.partitions)
        if self.complete:
            return f"the output {self.output!r} is complete"
        if finished < total:
            return (f"{finished} of {total} partitions are finished in {self.folder!r}; run the same command again "
                    "to do the rest")
        what = "its _metadata file" if self.kind == "parquet" else f"the table {self.output!r}"
        return (f"all {total} partitions are finished in {self.folder!r}, but the run stopped before it had written "
                f"{what}: run the same command again to write it (nothing is classified again)")

    def stop_message(self, bad):
        """A bad input stopped the run: what is kept, and the two ways on."""
        return (
            f"cannot classify {bad.source!r}: {bad.reason}. The {len(self.manifest.finished)} of "
            f"{len(self.partitions)} partitions finished are kept in {self.folder!r}. Run the same command again with "
            "--skip-bad (skip_bad=True) to skip the bad inputs and list them at the end, or replace this file by a "
            "good one of the same name and run it again (leaving it out of the inputs makes other inputs, which the "
            "folder refuses)"
        )

    def summary(self, todo):
        entries = self.manifest.finished.values()
        return _Summary(self.output, self.manifest.data["plan"]["images"], sum(entry["rows"] for entry in entries),
                        len(self.partitions), len(todo), len(self.partitions) - len(todo),
                        [bad for entry in entries for bad in entry["bad"]],
                        [source for entry in entries for source in entry["blank"]], len(self.changed))


def _run_on_cluster(client, run, todo, batch_size, progress):
    """Describe the model on a worker, start the run, then classify the partitions of ``todo`` on the cluster."""
    with _connected(client) as dask_client:
        description = dask_client.submit(_describe, run.settings.spec, pure=False).result()
        run.start(description)
        metadata = _dataset_metadata(run.manifest.data["provenance"])
        job = _Job(run.settings, batch_size, os.path.abspath(run.folder), tuple(description["columns"]),
                   tuple(description["column_types"].items()), tuple(metadata.items()))
        with progress_bar(sum(partition.images for partition in todo), "Classifying", enabled=progress) as bar:
            _classify_partitions(dask_client, job, todo, run.manifest, bar, run.lock.check)


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


def _arrays_to_files(settings, folder, written):
    """Save the array options (int8's calibration images) as ``_<name>.npy`` in the output folder, where every
    worker reads them, and give them to the workers as :class:`_NpyFile`; add the files written to ``written``."""
    options = {}
    for name, value in settings.spec.options:
        if isinstance(value, np.ndarray):
            path = os.path.abspath(os.path.join(folder, f"_{name}.npy"))
            sha256 = _array_sha256(value)
            if not (os.path.exists(path) and _array_sha256(np.load(path)) == sha256):
                with atomic_path(path, suffix=".npy") as temporary:
                    np.save(temporary, value)
                written.append(path)
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


def run_partitions(inputs, output, settings, client, batch_size, progress, command_line, redo_changed=False):
    """Plan, take the folder's lock, resume, classify what is missing and finish the output; return a
    :class:`_Summary`."""
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
    with _Run(output, kind, folder, partitions, settings, command_line) as run:
        todo = run.open(redo_changed)
        try:
            if todo:
                _run_on_cluster(client, run, todo, batch_size, progress)
            run.finish(rewrite=bool(todo))
        except BaseException as error:
            if run.started:  # tasks that were running when the run stopped may have finished their parts since
                run.manifest.reconcile(partitions)
                if isinstance(error, BadInputError):
                    raise BadInputError(run.stop_message(error.args[0])) from None
            if run.manifest.on_disk:
                error.kept = run.kept()
            raise
        finally:
            if run.started and os.path.isdir(folder):
                run.manifest.save()
                _remove_stale_temporaries(folder)
        return run.summary(todo)


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
    model_record = models.resolve_model(model, backend, input_shape)
    shape = model_record.input_shape
    partition_size = _checks.check_positive_int(partition_size, "partition_size")
    hdu = _checks.check_hdu(hdu)
    _check_predictor_options(options)
    options = _model_options(options, model_record)
    name = thresholds if isinstance(thresholds, str) else None
    saved, thresholds_file = model_record.thresholds if thresholds is None else (None, None)
    if thresholds is None and saved is None:
        name = default_thresholds(backend, model_record.data_set, shape)
    rule = resolve_thresholds(saved if saved is not None else name if thresholds is None else thresholds)
    if options.get("precision") == "bf16":
        # bf16 predicts again in fp32 the galaxies near the boundaries of the classes this run makes.
        options = dict(options, thresholds=(rule.disk, rule.bulge, bool(rule.disk_must_lead)))
    if options.get("model_card") is not None:
        # The card is found here, once ('auto': the one beside the model file, if any), and given to every worker:
        # the folder's settings record it, so that a card added, removed or changed since is refused.
        from gamornet.models.card import resolve_model_card

        where = model if models.is_published_name(model) else model_record.path
        options = dict(options, model_card=resolve_model_card(options["model_card"], where, backend, shape))
    # Published models go by name (each worker finds them in its cache); files and folders by their absolute path.
    for_workers = model if models.is_published_name(model) else os.path.abspath(os.fspath(model))
    # Files given as options (a calibration) go to the workers by absolute path.
    options = {name: os.path.abspath(os.fspath(value)) if isinstance(value, (str, os.PathLike))
               and os.path.isfile(value) else value for name, value in options.items()}
    spec = _PredictorSpec(for_workers, shape, backend, tuple(sorted(options.items())), model_record.sha256)
    return _Settings(spec, rule, name, partition_size, hdu, bool(skip_bad), thresholds_file)


def _model_options(options, resolved):
    """The options with the model folder's preprocessing and calibration made explicit, so that the workers apply
    them and the run's settings (and a resume) record them: the settings themselves, and the calibration's file."""
    from gamornet.inference.predictor import model_preprocessing

    options = dict(options)
    options["preprocessing"], _ = model_preprocessing(options.get("preprocessing", "model"), resolved)
    calibration = options.get("calibration", "model")
    if isinstance(calibration, str) and calibration == "model":
        options["calibration"] = resolved.calibration_file
    elif isinstance(calibration, str) and calibration == "none":
        options["calibration"] = None
    return options


def predict_catalogue(inputs, model, output, client=None, partition_size=DEFAULT_PARTITION_SIZE, *,
                      input_shape=None, backend="keras", thresholds=None, batch_size=64, hdu=None, skip_bad=False,
                      redo_changed=False, progress=False, command_line=None, **predictor_options):
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
        them in the manifest, instead of stopping. It may differ from run to
        run on one folder: a partition stopped by a bad input writes no part.
    redo_changed : bool
        Classify again the finished partitions whose input files changed
        since (another size or modification time), instead of refusing the
        run.
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
        settings (the columns of the predictor included) or other inputs, or
        inputs of finished partitions changed since (without
        ``redo_changed``).
    gamornet.errors.FolderInUseError
        Another run uses ``output`` (it holds the lock file ``_lock.json``).
    gamornet.errors.BadInputError
        A bad input stopped the run (without ``skip_bad``); the finished
        partitions are kept.
    ValueError, TypeError, OSError
        Invalid arguments, inputs that hold no images, an unreachable
        scheduler, an unusable model file (as :func:`gamornet.load_predictor`).
    """
    settings = run_settings(model, input_shape, backend, thresholds, partition_size, hdu, skip_bad, predictor_options)
    batch_size = _checks.check_positive_int(batch_size, "batch_size")
    return run_partitions(inputs, output, settings, client, batch_size, progress, command_line,
                          redo_changed=redo_changed).output
