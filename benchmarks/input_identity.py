"""What the input-identity check costs a rerun on a Dask cluster: measured on 10^5 files, extrapolated to 10^8.

A rerun of ``gamornet predict --workers/--scheduler`` on an output folder
checks that every finished partition's files are, now, what its worker read
(size and modification time, see :mod:`gamornet.survey.manifest`). In one run,
on N single-image FITS files in one folder (tiny files: only their metadata is
read), each step timed over the repeats and judged on its median:

(a) the listing: ``expand_inputs_with_ranges`` (``os.listdir`` of the folder
    and a check that each name is a file), which a rerun did before the
    check existed: the baseline;
(b) a bare ``os.stat`` of every file: the floor of one metadata request per
    file on this file system;
(c) the rerun's plan: ``plan_partitions`` (the listing, one ``os.stat`` per
    file that gives both the size it always needed and the identity, and the
    partitions);
(d) the check itself: ``Manifest.changed`` on a manifest whose every
    partition is finished (a sha256 of each partition's identities, compared
    with the recorded one);
(e) the workers' side: one ``os.stat`` per file before it is read, as in (b),
    spread over the workers.

The identity check adds at most (b) + (d) to a rerun (the plan's ``os.stat``
also gives the size it always read, so on most inputs it is no extra
request): reported per file, as a ratio to (a) and (c), and extrapolated
linearly to 10^8 files. Times are the CPU time of this process (user and
system), what the work costs on a core of its own, with the wall time on this
machine beside them. The files are fresh, so
their metadata is in the page cache (warm); on a cold network file system
(NFS, Lustre) each ``os.stat`` is a request to the metadata server: multiply
the count of files by its latency instead (the listing pays it too).

Usage::

    python benchmarks/input_identity.py            # 100,000 files, partitions of 4,096, 3 repeats
    python benchmarks/input_identity.py --quick    # 2,000 files, a smoke run
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
# This script's own folder would make "import distributed" find benchmarks/distributed.py instead of Dask's package.
sys.path[:] = [path for path in sys.path if os.path.abspath(path or os.curdir) != _HERE]

SURVEY_FILES = 10 ** 8


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2,000 files, one repeat")
    parser.add_argument("--files", type=int, help="files in the folder (default: 100,000)")
    parser.add_argument("--partition-size", type=int, default=4096, help="files per partition (default: 4096)")
    parser.add_argument("--repeats", type=int, help="repeats of each measurement (default: 3)")
    parser.add_argument("--folder", help="where to write the files (default: a temporary folder; give one on the "
                                         "file system to measure, such as a Lustre scratch folder)")
    args = parser.parse_args(argv)
    args.files = args.files or (2000 if args.quick else 100_000)
    args.repeats = args.repeats or (1 if args.quick else 3)
    return args


def write_files(folder, count):
    """``count`` tiny files named like FITS cutouts (never opened: the plan reads their metadata only)."""
    for index in range(count):
        with open(os.path.join(folder, f"g{index:09d}.fits"), "wb") as stream:
            stream.write(b"SIMPLE")


def timed(call, repeats):
    """(median CPU seconds of this process, user and system, median wall seconds, the call's result)."""
    cpu, wall, result = [], [], None
    for _ in range(repeats):
        start_cpu, start_wall = time.process_time(), time.perf_counter()
        result = call()
        cpu.append(time.process_time() - start_cpu)
        wall.append(time.perf_counter() - start_wall)
    return statistics.median(cpu), statistics.median(wall), result


def file_system(folder):
    try:
        return subprocess.run(["stat", "-f", "-c", "%T", folder], capture_output=True, text=True).stdout.strip()
    except OSError:
        return "unknown"


def measure(folder, args):
    from gamornet.io.images import expand_inputs_with_ranges
    from gamornet.survey.distributed import plan_partitions
    from gamornet.survey.manifest import Manifest, identity_sha256

    shape = (32, 32, 1)
    paths = [os.path.join(folder, name) for name in sorted(os.listdir(folder))]
    results, wall = {}, {}
    results["a"], wall["a"], _ = timed(lambda: expand_inputs_with_ranges([folder]), args.repeats)
    results["b"], wall["b"], _ = timed(lambda: [os.stat(path) for path in paths], args.repeats)
    results["c"], wall["c"], partitions = timed(lambda: plan_partitions([folder], shape, args.partition_size),
                                                args.repeats)
    manifest = Manifest(folder, {}, {})
    for partition in partitions:  # every partition finished, with the identities its worker saw
        digest = identity_sha256([path for path, _ in partition.files], partition.identity)
        manifest.finished[partition.id] = {"inputs_sha256": digest}
    results["d"], wall["d"], changed = timed(lambda: manifest.changed(partitions), args.repeats)
    assert changed == [] and sum(partition.images for partition in partitions) == args.files
    manifest_text = json.dumps({"finished": {str(index): {"file": f"part-{index:06d}-{'0' * 20}.parquet",
                                                          "inputs_sha256": "0" * 64, "rows": args.partition_size}
                                             for index in range(-(-SURVEY_FILES // args.partition_size))}})
    results["manifest_load"], _, _ = timed(lambda: json.loads(manifest_text), args.repeats)
    results["manifest_bytes"] = len(manifest_text)
    results["wall"] = wall
    return results, len(partitions)


def report(results, partitions, args, folder):
    n = args.files
    per_file = {key: results[key] / n * 1e6 for key in "abcd"}
    scale = SURVEY_FILES / n
    wall = results["wall"]
    print(f"{n:,} files in {partitions:,} partitions of {args.partition_size:,}, on {file_system(folder)} "
          f"({folder}); median of {args.repeats}; CPU time of this process (user + system: what the work costs "
          "on a core of its own), and the wall time on this machine")
    names = {"a": "listing (baseline)", "b": "bare os.stat of every file", "c": "the rerun's plan",
             "d": "the identity check"}
    for key, name in names.items():
        print(f"  ({key}) {name:28s} {results[key]:8.3f} s CPU  {per_file[key]:7.2f} us/file   "
              f"wall {wall[key]:8.3f} s")
    added = results["b"] + results["d"]
    print(f"  added by the identity, at most (b) + (d) = {added:.3f} s CPU, {added / n * 1e6:.2f} us/file, "
          f"{added / results['a']:.2f} x the listing (a), {added / results['c']:.2f} x the rerun's plan (c)")
    print(f"at 10^8 files (x {scale:,.0f}, linear, CPU): listing {results['a'] * scale / 60:.1f} min, plan "
          f"{results['c'] * scale / 60:.1f} min, of which the identity check (d) {results['d'] * scale / 60:.1f} "
          f"min and its os.stat (b) {results['b'] * scale / 60:.1f} min")
    print(f"  the manifest of 10^8 files ({-(-SURVEY_FILES // args.partition_size):,} partitions): "
          f"{results['manifest_bytes'] / 1e6:.1f} MB, read in {results['manifest_load']:.2f} s")
    print(f"  (e) the workers: {per_file['b']:.2f} us per file read (one os.stat), "
          f"{results['b'] * scale / 3600:.2f} core-hours at 10^8 files, spread over the workers")
    print(f"load average at end: {os.getloadavg()[0]:.1f}")


def main(argv=None):
    args = parse_arguments(argv)
    print(f"load average at start: {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory(prefix="gamornet-identity-", dir=args.folder) as folder:
        start = time.perf_counter()
        write_files(folder, args.files)
        print(f"wrote {args.files:,} files in {time.perf_counter() - start:.1f} s")
        results, partitions = measure(folder, args)
        report(results, partitions, args, folder)


if __name__ == "__main__":
    main()
