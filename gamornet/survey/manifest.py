"""The manifest of a cluster run's output folder: its settings, its finished partitions, and what each one read.

:mod:`gamornet.survey.distributed` keeps ``_manifest.json`` in every output
folder. It records

- the *settings* of the run (model, thresholds, the predictor's options and
  the columns it writes ...), which every later run on the folder must match;
- the *plan* (how many partitions and images, and a digest of the partitions'
  inputs);
- every finished partition: its part file, rows, bad inputs, and the
  *identity of its inputs*: for each file it read (a FITS file, or the array or
  cube a range of images comes from), the size in bytes and the modification
  time in nanoseconds, as the worker saw them when it read the file, summed
  up in one sha256 per partition (each part also holds the list, file by
  file, in its Parquet metadata).

A rerun compares the identity of the finished partitions' files, as they are
now, with what was recorded: a file rewritten since (same name, other
content) shows as another size or modification time.

Parts on disk are the truth: a part whose run stopped before saving the
manifest is found and added; an entry whose part is gone is dropped.
"""

import datetime
import hashlib
import json
import os
import re
import time

from gamornet._utils.atomic import atomic_write
from gamornet.errors import ResumeMismatchError

__all__ = ["MANIFEST_NAME", "MANIFEST_VERSION", "PARTITION_KEY", "Manifest", "file_identity", "identity_sha256",
           "mismatch_message", "now", "parts_on_disk"]

#: The file of an output folder that records its settings and finished partitions.
MANIFEST_NAME = "_manifest.json"
#: The version of the manifest's layout (2: inputs' identity, the predictor's columns in the settings).
MANIFEST_VERSION = 2
#: The key of a part's metadata that describes its partition (JSON).
PARTITION_KEY = "gamornet.partition"

_PART_NAME = re.compile(r"^part-(?P<index>\d+)-(?P<id>[0-9a-f]{20})\.parquet$")
# While partitions finish, the manifest is rewritten at most every 2 s, and at most 5 % of the time (a survey's
# manifest holds 10^5 partitions); always at the end. Parts missing from it are found on disk by the next run.
_MANIFEST_INTERVAL_S = 2.0
_MANIFEST_TIME_SHARE = 0.05
# How many changed files a refusal names.
_NAMED_CHANGES = 10


def now():
    """The time, in UTC, as ISO 8601 to the millisecond."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


def file_identity(path):
    """``[size in bytes, modification time in ns]`` of a file; None when it cannot be found or read."""
    try:
        status = os.stat(path)
    except OSError:
        return None
    return [status.st_size, status.st_mtime_ns]


def identity_sha256(paths, identities):
    """The sha256 of the identities of a partition's files (``[size, mtime_ns]`` or None each), with their paths."""
    text = json.dumps([[os.fspath(path), identity and list(identity)] for path, identity in zip(paths, identities)])
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def parts_on_disk(folder):
    """{partition id: file name} of the finished parts in ``folder``."""
    found = {}
    for name in os.listdir(folder):
        match = _PART_NAME.match(name)
        if match:
            found[match["id"]] = name
    return found


def _part_partition(path):
    import pyarrow.parquet as pq

    metadata = pq.read_metadata(path)
    return metadata, json.loads(metadata.metadata[PARTITION_KEY.encode()])


def _entry_from_part(path):
    """The manifest entry of a part found on disk but not in the manifest (its run stopped before saving it)."""
    metadata, partition = _part_partition(path)
    return {"index": partition["index"], "file": os.path.basename(path), "rows": metadata.num_rows,
            "bad": partition["bad"], "blank": partition["blank"], "inputs_sha256": partition.get("inputs_sha256"),
            "run": None, "finished_at": None, "worker": None, "worker_model_loads": None}


def mismatch_message(folder, recorded, wanted, what):
    """Why a folder refuses a run: the keys whose values differ, there and now."""
    differences = [f"{key}: {recorded.get(key)!r} there, {wanted.get(key)!r} now"
                   for key in sorted(set(recorded) | set(wanted)) if recorded.get(key) != wanted.get(key)]
    return (
        f"the output folder {folder!r} holds part of a run made with {what}: " + "; ".join(differences)
        + ". Rerun with the same model, settings and inputs to finish it, or write to another folder (or remove "
        "this one to start again)"
    )


def _describe_identity(identity):
    if identity is None:
        return "missing"
    size, mtime_ns = identity
    when = datetime.datetime.fromtimestamp(mtime_ns / 1e9, datetime.timezone.utc)
    return f"{size} bytes, modified {when.isoformat(sep=' ', timespec='microseconds')[:-6]} UTC"


class Manifest:
    """``_manifest.json``: the settings of a run and its finished partitions, rewritten atomically.

    Parameters
    ----------
    folder : str
        The output folder.
    settings : dict
        The settings of this run (without the predictor's columns, which
        :meth:`check_columns` adds once a worker has described them).
    plan : dict
        The plan of this run.
    """

    def __init__(self, folder, settings, plan):
        self.folder = folder
        self.path = os.path.join(folder, MANIFEST_NAME)
        self.data = {"gamornet_manifest": MANIFEST_VERSION, "settings": settings, "plan": plan,
                     "provenance": None, "runs": [], "finished": {}}
        self.on_disk = False
        self._saved_at = 0.0
        self._save_seconds = 0.0

    @classmethod
    def open(cls, folder, settings, plan, partitions):
        """The manifest of ``folder``, checked against this run and brought up to date with the parts on disk."""
        manifest = cls(folder, settings, plan)
        if os.path.exists(manifest.path):
            recorded = manifest._read()
            there = {key: value for key, value in recorded["settings"].items() if key != "columns"}
            if there != settings:
                raise ResumeMismatchError(mismatch_message(folder, there, settings, "another model or other settings"))
            if recorded["plan"] != plan:
                raise ResumeMismatchError(mismatch_message(folder, recorded["plan"], plan, "other inputs") + (
                    ". The same images under other names count as other inputs: the sources are written as the "
                    "inputs are given, so run the command from the same folder with the same paths"
                    if recorded["plan"]["images"] == plan["images"] else ""))
            manifest.data = recorded
            manifest.on_disk = True
        manifest.reconcile(partitions)
        return manifest

    def _read(self):
        try:
            with open(self.path, encoding="utf-8") as stream:
                recorded = json.load(stream)
            recorded["settings"], recorded["plan"], recorded["finished"]  # noqa: B018 - the keys must exist
        except (ValueError, KeyError, TypeError) as error:
            raise ValueError(f"the manifest {self.path!r} is damaged ({error}); remove the folder "
                             f"{self.folder!r} to start again") from None
        version = recorded.get("gamornet_manifest")
        if version != MANIFEST_VERSION:
            raise ValueError(
                f"the output folder {self.folder!r} was written by another version of gamornet (manifest version "
                f"{version}, this one reads version {MANIFEST_VERSION}, which records what each partition read and "
                "the columns of the table): finish it with the version that started it, or remove it to start again")
        return recorded

    def check_columns(self, columns):
        """Record the predictor's columns ({name: type}), or refuse a run whose columns differ from the folder's."""
        recorded = self.data["settings"].get("columns")
        if recorded is not None and recorded != columns:
            raise ResumeMismatchError(
                f"the output folder {self.folder!r} holds parts with the columns {recorded}, but the predictor of this "
                f"run writes {columns}: a table has one set of columns. A model card, MC dropout or a calibration "
                "added or removed since the folder was started changes them; restore the settings that started "
                "it, or write to another folder")
        self.data["settings"]["columns"] = columns

    def reconcile(self, partitions):
        """Parts on disk are the truth: add those the manifest missed, drop entries whose part is gone."""
        on_disk = parts_on_disk(self.folder)
        planned = {partition.id: partition for partition in partitions}
        finished = self.data["finished"]
        for partition_id in [key for key in finished if key not in on_disk or key not in planned]:
            del finished[partition_id]
        for partition_id, name in on_disk.items():
            if partition_id in planned and partition_id not in finished:
                finished[partition_id] = _entry_from_part(os.path.join(self.folder, name))

    @property
    def finished(self):
        """{partition id: entry} of the finished partitions."""
        return self.data["finished"]

    # ------------------------------------------------------------------ the inputs' identity

    def changed(self, partitions):
        """The finished partitions whose files are not, now, what their worker read (``partition.identity``)."""
        return [partition for partition in partitions if partition.id in self.finished
                and self.finished[partition.id].get("inputs_sha256")
                != identity_sha256([path for path, _ in partition.files], partition.identity)]

    def describe_changes(self, changed):
        """The files of the ``changed`` partitions that changed, then and now, in words (the first few)."""
        lines, total = [], 0
        for partition in changed:
            recorded = None
            try:
                _, recorded = _part_partition(os.path.join(self.folder, self.finished[partition.id]["file"]))
                recorded = recorded.get("identity")
            except (OSError, ValueError, KeyError):
                pass
            for index, ((_, shown), now_identity) in enumerate(zip(partition.files, partition.identity)):
                then = recorded[index] if recorded is not None and index < len(recorded) else "unknown"
                if then == "unknown" or then != now_identity:
                    total += 1
                    if len(lines) < _NAMED_CHANGES:
                        then = then if then == "unknown" else _describe_identity(then)
                        lines.append(f"{shown} (then {then}; now {_describe_identity(now_identity)})")
        more = f" and {total - len(lines)} more" if total > len(lines) else ""
        return f"{', '.join(lines)}{more}"

    def forget(self, partitions):
        """Remove the parts of ``partitions`` and their entries (they will be done again)."""
        for partition in partitions:
            entry = self.finished.pop(partition.id, None)
            if entry is not None:
                try:
                    os.remove(os.path.join(self.folder, entry["file"]))
                except FileNotFoundError:
                    pass
        for name in ("_metadata", "_common_metadata"):  # they describe the parts removed
            try:
                os.remove(os.path.join(self.folder, name))
            except FileNotFoundError:
                pass

    # ------------------------------------------------------------------ runs

    def start_run(self, command_line, skip_bad):
        """Open the record of a run (kept in memory until :meth:`save`)."""
        self.data["runs"].append({"started_at": now(), "command_line": command_line, "skip_bad": bool(skip_bad),
                                  "partitions_done": 0})
        return len(self.data["runs"])

    def record(self, result):
        """Record a finished partition (``result``: what its task returned); save now and then."""
        run = self.data["runs"][-1]
        run["partitions_done"] += 1
        entry = {key: result[key] for key in ("index", "file", "rows", "bad", "blank", "inputs_sha256", "worker",
                                               "worker_model_loads")}
        self.finished[result["id"]] = dict(entry, run=len(self.data["runs"]), finished_at=now())
        interval = max(_MANIFEST_INTERVAL_S, self._save_seconds / _MANIFEST_TIME_SHARE)
        if time.monotonic() - self._saved_at > interval:
            self.save()

    def save(self):
        """Write the manifest (atomically)."""
        start = time.monotonic()
        with atomic_write(self.path, encoding="utf-8") as stream:
            json.dump(self.data, stream, indent=1)
        self.on_disk = True
        self._saved_at = time.monotonic()
        self._save_seconds = self._saved_at - start
