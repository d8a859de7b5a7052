"""gamornet._utils.lockfile: the exclusive-create lock of an output folder, its stale-lock rule and its heartbeat.

Two real runs at once on one folder are in tests/test_distributed.py; these are the rules, on real files and real
processes.
"""

import json
import os
import subprocess
import sys
import threading
import time

import pytest

from gamornet._utils import lockfile
from gamornet._utils.lockfile import LockFile
from gamornet.errors import FolderInUseError


def _write_holder(path, **fields):
    host, boot, namespace = lockfile.machine_identity()
    holder = {"host": host, "boot_id": boot, "pid_namespace": namespace, "pid": os.getpid(), "started": time.time(),
              "command_line": ["gamornet", "predict", "x"], "token": "f" * 16}
    holder.update(fields)
    with open(path, "w") as stream:
        json.dump(holder, stream)


def _dead_pid():
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_held_lock_refuses_a_second_holder_and_is_removed_on_release(tmp_path):
    path = str(tmp_path / "_lock.json")
    first = LockFile(path, "the output folder 'x'", ["gamornet", "predict", "a"])
    with first:
        holder = json.load(open(path))
        assert holder["pid"] == os.getpid() and holder["token"] == first.token
        assert holder["host"] == lockfile.machine_identity()[0] and holder["command_line"][-1] == "a"
        with pytest.raises(FolderInUseError, match=r"the output folder 'x' is in use by another run: process "
                                                   rf"{os.getpid()} on .*, started .* UTC \(gamornet predict a\), "
                                                   r"last sign of life \d+ s ago. Wait for it to finish"):
            LockFile(path, "the output folder 'x'").acquire()
    assert not os.path.exists(path)


def test_abandoned_locks_are_taken_over_and_live_ones_are_not(tmp_path):
    path = str(tmp_path / "_lock.json")
    # Same machine, process gone (kill -9, a crash): taken over at once.
    _write_holder(path, pid=_dead_pid())
    with LockFile(path, "x") as lock:
        assert json.load(open(path))["token"] == lock.token
    # Another node, touched a moment ago: alive for all this run can tell.
    _write_holder(path, host="node-17", boot_id="other")
    with pytest.raises(FolderInUseError, match="process .* on node-17"):
        LockFile(path, "x").acquire()
    # Another node, silent for longer than STALE_AFTER_S (a lost node, a job killed by the scheduler).
    old = time.time() - lockfile.STALE_AFTER_S - 5
    os.utime(path, (old, old))
    with LockFile(path, "x") as lock:
        assert json.load(open(path))["token"] == lock.token
    # A running process of this machine that stopped beating (paused, or its pid reused) is abandoned too.
    _write_holder(path)
    os.utime(path, (old, old))
    LockFile(path, "x").acquire().release()
    # A half-written lock file (its holder is writing it now) is in use.
    with open(path, "w") as stream:
        stream.write('{"host": ')
    with pytest.raises(FolderInUseError, match=r"process \? on \?"):
        LockFile(path, "x").acquire()


def test_of_two_runs_breaking_one_abandoned_lock_only_one_takes_it(tmp_path):
    path = str(tmp_path / "_lock.json")
    for _ in range(5):
        _write_holder(path, pid=_dead_pid())
        outcomes, start = [], threading.Barrier(4)

        def take():
            start.wait()
            try:
                outcomes.append(LockFile(path, "x").acquire())
            except FolderInUseError as error:
                outcomes.append(error)

        threads = [threading.Thread(target=take) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        holders = [outcome for outcome in outcomes if isinstance(outcome, LockFile)]
        assert len(holders) == 1, outcomes
        assert json.load(open(path))["token"] == holders[0].token
        holders[0].release()
        assert not os.listdir(tmp_path)


def test_a_holder_whose_lock_was_taken_over_finds_out(tmp_path, monkeypatch):
    monkeypatch.setattr(lockfile, "HEARTBEAT_S", 0.02)
    path = str(tmp_path / "_lock.json")
    lock = LockFile(path, "the output folder 'x'").acquire()
    before = os.stat(path).st_mtime_ns
    deadline = time.monotonic() + 10
    while os.stat(path).st_mtime_ns == before:  # the heartbeat touches the file
        assert time.monotonic() < deadline
        time.sleep(0.01)
    lock.check()
    _write_holder(path, host="node-3", pid=4321)  # another run took the lock over meanwhile
    deadline = time.monotonic() + 10
    while lock.lost is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    with pytest.raises(FolderInUseError, match=r"the output folder 'x' was taken over by another run \(process 4321 "
                                               "on node-3.*this run stops"):
        lock.check()
    lock.release()
    assert json.load(open(path))["host"] == "node-3"  # the new holder's lock is left alone
