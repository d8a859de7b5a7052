"""The state a killed training run resumes from, kept in ``<output folder>/backup/``.

After every epoch the loop commits, in this order:

1. ``backup/epoch-<n>.state.npy``: every variable of the run, one ``.npy``
   array after another: the network's weights, the optimizer's state (its
   step count, momenta) and the random number generators' state (the
   dropout layers' seeds), each written under a temporary name and renamed;
2. ``backup/state.json``: the number of finished epochs, the name of that
   file, the run's settings (its seed among them) and the rows of
   ``metrics.csv``, written under a temporary name and renamed: the rename
   is the moment the epoch counts as kept;
3. ``metrics.csv``, from the rows in ``state.json``.

A run killed at any moment leaves the previous state whole; a resumed run
restores the variables, the random state and the rows, and the data
pipelines draw each epoch's order and augmentation from the seed and the
epoch's number, so the resumed run computes the epochs the uninterrupted one
would have. Steps 1-3 run in a thread while the next epoch trains (the
variables are copied first); one commit at a time. A full disk stops the run
with an ``OSError`` that says so, and what is on disk stays the last epoch
kept.
"""

import contextlib
import errno
import glob
import json
import os
import threading

import numpy as np

from gamornet._utils.atomic import atomic_path, atomic_write, remove_stale_temporaries

__all__ = ["BACKUP_FOLDER", "ResumableState", "run_variables", "check_free_space", "explain_write_error", "os_error"]

#: The folder, inside the output folder, that holds the state a resumed run starts from.
BACKUP_FOLDER = "backup"

#: Extra room asked for beyond a file's payload (headers, file-system blocks).
_SPARE_BYTES = 4 * 2**20

_STATE_SUFFIX = ".state.npy"


def _normalised(settings):
    return json.loads(json.dumps(settings, sort_keys=True, default=str))


def run_variables(model):
    """The variables a resumed run needs, in a fixed order: {'weights', 'optimizer', 'random'} -> list.

    ``random`` holds the variables of the model that its weights leave out:
    the state of the seed generators of its dropout layers, which advances
    at every training step.
    """
    weights = list(model.weights)
    known = {id(variable) for variable in weights}
    random = [variable for variable in model.variables if id(variable) not in known]
    optimizer = list(model.optimizer.variables) if model.optimizer is not None else []
    return {"weights": weights, "optimizer": optimizer, "random": random}


def os_error(number, message):
    """An ``OSError`` with ``errno`` ``number`` whose text is ``message`` alone (no "[Errno n]" before it)."""
    error = OSError(message)
    error.errno = number
    return error


def _megabytes(n_bytes):
    return f"{n_bytes / 2**20:.0f} MB"


def check_free_space(folder, n_bytes, what):
    """Raise an ``OSError`` (ENOSPC) before writing ``n_bytes`` into ``folder`` if its file system has less free.

    Checked first because HDF5 writers fail badly on a full disk (a crash of the interpreter at exit).
    """
    try:
        stats = os.statvfs(folder)
    except (OSError, AttributeError):
        return
    free = stats.f_bavail * stats.f_frsize
    if free < n_bytes + _SPARE_BYTES:
        raise os_error(errno.ENOSPC, f"no space left on the disk holding {folder!r} to write {what}: it needs about "
                      f"{_megabytes(n_bytes + _SPARE_BYTES)} and {_megabytes(free)} are free")  # fmt: skip


def explain_write_error(error, what, kept):
    """An ``OSError`` that says what could not be written and what was ``kept``, from a writer's error."""
    number = getattr(error, "errno", None)
    reason = "the disk is full" if number in (errno.ENOSPC, errno.EDQUOT) else (
        getattr(error, "strerror", None) or str(error).split("\n")[0])  # fmt: skip
    if str(error).startswith("no space left"):  # check_free_space's own words
        reason = str(error)
    return os_error(number or errno.EIO, f"cannot write {what} ({reason}). {kept}")


class ResumableState:
    """The resumable state of a run in ``<folder>/backup``: read, checked, restored and committed after each epoch.

    Parameters
    ----------
    folder : str
        The run's output folder.
    settings : dict
        The run's settings; a run started with other settings is refused.
    writer : bool
        Whether this process writes (False on the workers of a multi-worker
        run other than the chief).
    """

    def __init__(self, folder, settings, writer=True):
        self.output = folder
        self.folder = os.path.join(folder, BACKUP_FOLDER)
        self.state_path = os.path.join(self.folder, "state.json")
        self.settings = _normalised(settings)
        self.writer = writer
        self._thread = self._error = None

    def clear(self):
        """Forget any earlier state (``fresh``)."""
        if self.writer:
            for path in glob.glob(os.path.join(self.folder, "*")) + glob.glob(os.path.join(self.folder, ".tmp-*")):
                with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                    os.remove(path)

    def saved(self):
        """The saved state (a dict), or None when there is none."""
        if not os.path.isfile(self.state_path):
            return None
        try:
            with open(self.state_path, encoding="utf-8") as stream:
                state = json.load(stream)
            int(state["completed_epochs"]), state["weights"], dict(state["settings"])
        except (ValueError, KeyError, TypeError) as error:
            raise OSError(f"the training state {self.state_path!r} cannot be read ({error}); start over with "
                          "fresh=True (--fresh)") from None  # fmt: skip
        return state

    def saved_seed(self):
        """The seed the saved run was started with (None: no saved run, or one that did not record it)."""
        state = self.saved()
        return None if state is None else state["settings"].get("seed")

    def _check_settings(self, state):
        changed = sorted(key for key in set(state["settings"]) | set(self.settings)
                         if state["settings"].get(key) != self.settings.get(key))  # fmt: skip
        if changed:
            details = "; ".join(f"{key}: {state['settings'].get(key)!r} then, {self.settings.get(key)!r} now"
                                for key in changed)  # fmt: skip
            raise ValueError(
                f"{self.output!r} holds a run started with other settings ({details}). Start it again with the same "
                "settings to resume it, or start over with fresh=True (--fresh), or use another output folder"
            )

    def restore(self, model):
        """Load the saved state into ``model`` (whose optimizer is built here).

        Returns
        -------
        (int, list)
            The epochs finished, and the rows of ``metrics.csv`` they wrote
            (None for a state written before the rows were kept with it).
        """
        state = self.saved()
        if state is None:
            return 0, []
        self._check_settings(state)
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        path = os.path.join(self.folder, state["weights"])
        try:
            if path.endswith(_STATE_SUFFIX):
                _read_variables(path, run_variables(model))
            else:  # a state written by gamornet 0.5.0: Keras weights, no random state
                model.load_weights(path)
        except (OSError, ValueError) as error:
            raise OSError(
                f"the training state in {self.folder!r} cannot be restored from {path!r} ({error}); start over with "
                "fresh=True (--fresh)"
            ) from None
        return int(state["completed_epochs"]), state.get("metrics")

    def commit(self, model, completed_epochs, rows, then=None):
        """Keep the state after ``completed_epochs`` epochs, with ``rows`` of metrics.csv (see the module).

        The variables are copied now, and written by a thread while the next
        epoch trains; ``then()`` (writing metrics.csv) follows, in that
        thread. One commit at a time: the previous one is waited for first,
        and its error, if any, raised here. A full disk is found now.
        """
        if not self.writer:
            return
        self.wait()
        os.makedirs(self.folder, exist_ok=True)
        variables = run_variables(model)
        n_bytes = sum(int(np.prod(v.shape)) * np.dtype(v.dtype).itemsize for group in variables.values() for v in group)
        where = f"the training state of epoch {completed_epochs} into {self.folder!r}"
        try:
            check_free_space(self.folder, n_bytes, f"the training state ({_megabytes(n_bytes)})")
        except OSError as error:
            raise explain_write_error(error, where, _kept(completed_epochs - 1)) from None
        arrays = [variable.numpy() for group in ("weights", "optimizer", "random") for variable in variables[group]]
        rows = [list(row) for row in rows]
        self._thread = threading.Thread(target=self._write, args=(arrays, completed_epochs, rows, then, where),
                                        name="gamornet-training-state")  # fmt: skip
        self._thread.start()

    def wait(self, quietly=False):
        """Wait for the commit under way, if any; raise its error (unless ``quietly``)."""
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()
        error, self._error = self._error, None
        if error is not None and not quietly:
            raise error

    def _write(self, arrays, completed_epochs, rows, then, where):
        name = f"epoch-{completed_epochs:04d}{_STATE_SUFFIX}"
        path = os.path.join(self.folder, name)
        try:
            remove_stale_temporaries(path)
            with atomic_path(path, suffix=_STATE_SUFFIX) as temporary:
                with open(temporary, "wb") as stream:
                    for array in arrays:
                        np.save(stream, array, allow_pickle=False)
            with atomic_write(self.state_path, "w", encoding="utf-8") as stream:
                json.dump({"completed_epochs": completed_epochs, "weights": name, "settings": self.settings,
                           "metrics": rows}, stream, indent=1)  # fmt: skip
        except OSError as error:
            self._error = explain_write_error(error, where, _kept(completed_epochs - 1))
            return
        for old in glob.glob(os.path.join(self.folder, "epoch-*")):
            if os.path.basename(old) != name:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(old)
        if then is not None:
            try:
                then()
            except OSError as error:
                self._error = error


def _kept(epochs):
    kept = f"The run's state after epoch {epochs} is kept" if epochs else "No epoch is kept yet"
    return kept + "; free some space, then run the same command again to resume it"


def _read_variables(path, variables):
    """Assign the arrays of ``path`` to ``variables``, in order, after checking that every shape matches."""
    targets = [variable for group in ("weights", "optimizer", "random") for variable in variables[group]]
    arrays = []
    with open(path, "rb") as stream:
        while stream.peek(1):
            arrays.append(np.load(stream, allow_pickle=False))
    if len(arrays) != len(targets):
        raise ValueError(f"it holds {len(arrays)} variables where the network and its optimizer have {len(targets)}")
    for variable, array in zip(targets, arrays):
        if tuple(array.shape) != tuple(variable.shape):
            raise ValueError(f"a variable of shape {array.shape} where {variable.path} has shape {tuple(variable.shape)}")
    for variable, array in zip(targets, arrays):
        variable.assign(array)
