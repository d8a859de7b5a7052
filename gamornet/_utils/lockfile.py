"""A lock file that works on the shared file systems of clusters (NFS, Lustre, GPFS) as on a laptop.

A run takes the lock by creating the file exclusively (``O_CREAT | O_EXCL``,
which NFS 3 and later and Lustre make atomic across nodes) and writing into
it who holds it: host, process id, start time, the command, and a random
token. While it holds the lock, a background thread *beats*: every
:data:`HEARTBEAT_S` seconds it checks that the file still holds its token and
touches it. Another run finds the lock *abandoned* when

- its holder ran on the same machine (same host name, boot and process
  namespace) and that process no longer runs (Ctrl-C'd runs remove their lock;
  this covers ``kill -9`` and crashes at once); or
- the file has not been touched for :data:`STALE_AFTER_S` seconds (a node
  lost, a job killed by the scheduler: the holder cannot beat any more). This
  compares the file's modification time with this machine's clock, so it
  assumes the nodes' clocks agree within a minute (NTP).

An abandoned lock is broken under a second, short-lived lock (``<name>.break``),
so that of two runs that find it abandoned at once only one takes it over. A
holder whose lock was taken over (it was paused for longer than
:data:`STALE_AFTER_S`) finds another token at its next beat; :meth:`LockFile.check`
then raises, so that it stops instead of writing beside the new holder.

Backend-neutral; imports nothing beyond the standard library.
"""

import contextlib
import datetime
import json
import os
import socket
import threading
import time

from gamornet._utils.atomic import is_running
from gamornet.errors import FolderInUseError

__all__ = ["HEARTBEAT_S", "STALE_AFTER_S", "LockFile", "machine_identity"]

#: Seconds between two beats of a lock's holder (touching the lock file).
HEARTBEAT_S = 10.0
#: A lock file not touched for this many seconds is abandoned.
STALE_AFTER_S = 120.0
# A break lock older than this is left by a process that died while breaking a lock (which takes milliseconds).
_BREAK_STALE_S = 30.0


def _read_first_line(path):
    with contextlib.suppress(OSError):
        with open(path, encoding="ascii") as stream:
            return stream.readline().strip()
    return ""


def machine_identity():
    """(host name, boot id, process namespace): processes with the same identity see each other's process ids."""
    namespace = ""
    with contextlib.suppress(OSError):
        namespace = str(os.stat("/proc/self/ns/pid").st_ino)
    return socket.gethostname(), _read_first_line("/proc/sys/kernel/random/boot_id"), namespace


def _describe_time(seconds):
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


class LockFile:
    """An exclusive lock on a file path, for the length of a run (see the module's description).

    Parameters
    ----------
    path : str
        The lock file (created when the lock is taken, removed when it is
        released).
    what : str
        What the lock protects, in words, for the messages
        (``"the output folder 'run.parquet'"``).
    command_line : list of str, optional
        Recorded in the lock file, so that the message of a second run says
        which command holds it.

    Examples
    --------
    >>> with LockFile("/shared/run.parquet/_lock.json", "the output folder"):   # doctest: +SKIP
    ...     work()
    """

    def __init__(self, path, what, command_line=None):
        self.path = os.fspath(path)
        self.what = what
        self.command_line = command_line
        self.token = os.urandom(8).hex()
        self.lost = None
        self._stop = threading.Event()
        self._thread = None

    # ------------------------------------------------------------------ taking and giving back

    def acquire(self):
        """Take the lock, breaking an abandoned one; raise :class:`gamornet.errors.FolderInUseError` if held."""
        for _ in range(3):
            if self._create():
                self._thread = threading.Thread(target=self._beat, name="gamornet-lock-heartbeat", daemon=True)
                self._thread.start()
                return self
            holder = self._holder()
            if holder is None:  # removed meanwhile: try again
                continue
            if not self._abandoned(holder):
                raise FolderInUseError(self._busy_message(holder))
            self._break(holder)
        raise FolderInUseError(f"{self.what} is being taken over by another run at this moment (its lock "
                               f"{self.path!r} changed hands while this run tried to take it): wait for that run")

    def release(self):
        """Stop beating and remove the lock file, if it still holds this run's token."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        holder = self._holder()
        if holder is not None and holder.get("token") == self.token:
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.path)

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc_info):
        self.release()

    def check(self):
        """Raise :class:`gamornet.errors.FolderInUseError` if another run took the lock over meanwhile."""
        if self.lost is not None:
            raise FolderInUseError(
                f"{self.what} was taken over by another run ({self.lost}) while this one was paused for more than "
                f"{STALE_AFTER_S:g} s: this run stops so that the two do not write into it together")

    # ------------------------------------------------------------------ the file

    def _record(self):
        host, boot, namespace = machine_identity()
        return {"host": host, "boot_id": boot, "pid_namespace": namespace, "pid": os.getpid(),
                "started": time.time(), "command_line": self.command_line, "token": self.token}

    def _create(self):
        try:
            descriptor = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(descriptor, "w", encoding="utf-8") as stream:
            json.dump(self._record(), stream)
            stream.flush()
            os.fsync(stream.fileno())
        return True

    def _holder(self):
        """What the lock file says of its holder, with its age in seconds (``{}`` when unreadable); None if absent."""
        try:
            with open(self.path, encoding="utf-8") as stream:
                text = stream.read()
            age = time.time() - os.stat(self.path).st_mtime
        except FileNotFoundError:
            return None
        try:
            holder = json.loads(text)
        except ValueError:  # being written at this moment, or damaged
            holder = {}
        holder = holder if isinstance(holder, dict) else {}
        return dict(holder, age=age)

    def _same_machine(self, holder):
        return [holder.get(key) for key in ("host", "boot_id", "pid_namespace")] == list(machine_identity())

    def _abandoned(self, holder):
        if holder["age"] > STALE_AFTER_S:
            return True
        pid = holder.get("pid")
        return isinstance(pid, int) and self._same_machine(holder) and not is_running(pid)

    def _break(self, holder):
        """Remove an abandoned lock, under a break lock, if it is still the one judged abandoned."""
        breaker = self.path + ".break"
        try:
            descriptor = os.open(breaker, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            with contextlib.suppress(FileNotFoundError):
                if time.time() - os.stat(breaker).st_mtime > _BREAK_STALE_S:
                    os.remove(breaker)
            return
        os.close(descriptor)
        try:
            current = self._holder()
            if current is not None and current.get("token") == holder.get("token"):
                with contextlib.suppress(FileNotFoundError):
                    os.remove(self.path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.remove(breaker)

    def _beat(self):
        while not self._stop.wait(HEARTBEAT_S):
            holder = self._holder()
            if holder is None or holder.get("token") != self.token:
                self.lost = "the lock file is gone" if holder is None else self._who(holder)
                return
            with contextlib.suppress(OSError):
                os.utime(self.path)

    # ------------------------------------------------------------------ messages

    @staticmethod
    def _who(holder):
        started = holder.get("started")
        when = f", started {_describe_time(started)}" if isinstance(started, (int, float)) else ""
        return f"process {holder.get('pid', '?')} on {holder.get('host', '?')}{when}"

    def _busy_message(self, holder):
        command = holder.get("command_line")
        command = f" ({' '.join(map(str, command))})" if isinstance(command, list) and command else ""
        return (
            f"{self.what} is in use by another run: {self._who(holder)}{command}, last sign of life "
            f"{holder['age']:.0f} s ago. Wait for it to finish, or write to another folder. If that run is dead, its "
            f"lock {self.path!r} is taken over once it has shown no sign of life for {STALE_AFTER_S:g} s (at once "
            "on the machine it ran on); remove it yourself only when you are sure that no run uses the folder"
        )
