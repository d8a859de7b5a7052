"""Prediction throughput of GaMorNet, against a bare compiled forward pass.

In one run, on the same images and the same (random) weights, it measures the
images/s of

(a) ``gamornet_predict_keras``;
(b) ``gamornet_predict_tflearn``;
(c) ``gamornet predict`` on a ``.npy`` file (``gamornet.cli.main.main`` in process);
(d) a bare compiled forward pass of the same Keras model (``tf.function`` over
    the same batches): the floor to reach.

Throughput is the marginal rate between two sizes (512 and 2,048 images by
default): (n2 - n1) / (time(n2) - time(n1)), so fixed costs (building and
loading the model, tracing, starting up) cancel; they are reported separately
as the intercept time(n1) - n1 / rate. Sizes and methods are interleaved over
the repeats; the targets are judged on the median times (robust to a burst of
load from other programs in one repeat); the best-of-repeats rate and the
rate per CPU-second of this process (which other programs disturb less) are
shown too.

It also measures the peak resident memory (RSS) of (c), run as a subprocess,
on .npy files of 5,000 and 20,000 images.

Targets (issue 7): (a), (b), (c) >= 0.9 x (d); peak RSS of (c) < 1.5 GB,
growing by less than 10 % from 5,000 to 20,000 images.

Usage::

    python benchmarks/predict_throughput.py             # the full benchmark (SDSS images), ~10 min on 2 cores
    python benchmarks/predict_throughput.py --quick     # tiny sizes, a smoke run
"""

import argparse
import contextlib
import io
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

import gamornet.models.network  # noqa: F401  (TensorFlow imported quietly, then Keras: no start-up lines)

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(_HERE, "..", "tests"))  # the test helpers that write legacy model files

METHODS = {
    "a": "(a) gamornet_predict_keras",
    "b": "(b) gamornet_predict_tflearn",
    "c": "(c) gamornet predict, .npy",
    "d": "(d) compiled forward pass (floor)",
}


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="tiny sizes (8 and 24 images; RSS at 40 and 160), one repeat: a smoke run")
    parser.add_argument("--input-shape", default="SDSS", help="SDSS, CANDELS or X,Y,NDIM (default: SDSS)")
    parser.add_argument("--sizes", default=None, help="the two sizes of the marginal rate (default: 512,2048)")
    parser.add_argument("--rss-sizes", default=None, help="the two .npy sizes of the RSS runs (default: 5000,20000)")
    parser.add_argument("--repeats", type=int, default=None, help="repeats of every timing (default: 3)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--methods", default="abcd", help="which of a, b, c, d to time (default: abcd)")
    parser.add_argument("--no-rss", action="store_true", help="skip the peak-RSS runs")
    args = parser.parse_args(argv)
    quick = args.quick
    args.sizes = _pair(args.sizes or ("8,24" if quick else "512,2048"), "--sizes")
    args.rss_sizes = _pair(args.rss_sizes or ("40,160" if quick else "5000,20000"), "--rss-sizes")
    args.repeats = args.repeats or (1 if quick else 3)
    return args


def _pair(text, name):
    values = tuple(int(value) for value in text.split(","))
    if len(values) != 2 or not 0 < values[0] < values[1]:
        raise SystemExit(f"{name} must be two increasing sizes, such as 512,2048. Received: {text!r}")
    return values


def _shape(text):
    from gamornet._utils.checks import check_input_shape

    return check_input_shape(text if text in ("SDSS", "CANDELS") else tuple(int(v) for v in text.split(",")))


def load_average():
    try:
        return open("/proc/loadavg").read().split()[:3]
    except OSError:
        return ["?"] * 3


@contextlib.contextmanager
def quiet_stderr():
    """Keep progress bars out of the benchmark's output."""
    with contextlib.redirect_stderr(io.StringIO()):
        yield


def make_model_files(folder, shape, with_tflearn):
    """Random Keras-initialised weights, as a Keras 2 HDF5 file and a TFLearn checkpoint."""
    from gamornet import keras_module
    from legacy_files import write_keras2_file

    model = keras_module.gamornet_build_model_keras(shape)
    weights = [tuple(layer.get_weights()) for layer in model.layers if layer.weights]
    keras_path = write_keras2_file(os.path.join(folder, "model.hdf5"), weights)
    tflearn_prefix = None
    if with_tflearn:
        from tflearn_files import write_tflearn_checkpoint

        tflearn_prefix = write_tflearn_checkpoint(os.path.join(folder, "tflearn", "check-1"), weights, shape)
    return keras_path, tflearn_prefix


class Floor:
    """(d): the same Keras model, loaded once, run by a plain tf.function over the same batches."""

    def __init__(self, keras_path, shape):
        import tensorflow as tf

        from gamornet import keras_module

        start = time.perf_counter()
        self.model = keras_module.gamornet_build_model_keras(shape)
        keras_module.gamornet_load_model_keras(self.model, keras_path)
        self.load_seconds = time.perf_counter() - start
        model = self.model
        self.forward = tf.function(lambda batch: model(batch, training=False),
                                   input_signature=[tf.TensorSpec((None,) + tuple(shape), tf.float32)])
        start = time.perf_counter()
        self.forward(np.zeros((1,) + tuple(shape), np.float32))
        self.trace_seconds = time.perf_counter() - start

    def __call__(self, images, batch_size):
        out = np.empty((len(images), 3), np.float32)
        for start in range(0, len(images), batch_size):
            out[start : start + batch_size] = self.forward(images[start : start + batch_size]).numpy()
        return out


def timers(args, shape, images, npy_files, keras_path, tflearn_prefix, workdir):
    """A function per method: n -> seconds to predict the first n images."""
    from gamornet import keras_module
    from gamornet.cli import main as cli

    shape_option = args.input_shape
    thresholds = [] if shape_option in ("SDSS", "CANDELS") else ["--thresholds", "0.7,0.7"]
    result = {}
    if "a" in args.methods:
        result["a"] = lambda n: keras_module.gamornet_predict_keras(images[:n], keras_path, shape, args.batch_size)
    if "b" in args.methods:
        from gamornet import tflearn_module

        result["b"] = lambda n: tflearn_module.gamornet_predict_tflearn(images[:n], tflearn_prefix, shape,
                                                                         args.batch_size)
    if "c" in args.methods:
        def run_cli(n):
            status = cli.main(["predict", npy_files[n], "--model", keras_path, "--input-shape", shape_option,
                               "--batch-size", str(args.batch_size), *thresholds, "--no-progress",
                               "--output", os.path.join(workdir, "predictions.csv")])
            if status != 0:
                raise RuntimeError(f"gamornet predict failed with status {status}")

        result["c"] = run_cli
    if "d" in args.methods:
        floor = Floor(keras_path, shape)
        result["d"] = lambda n: floor(images[:n], args.batch_size)
        result["d"].floor = floor
    return result


def time_methods(functions, sizes, repeats):
    """Wall and CPU seconds (all threads of this process) of every method and size, interleaved."""
    times = {(key, n): [] for key in functions for n in sizes}
    cpu_times = {(key, n): [] for key in functions for n in sizes}
    keys = list(functions)
    for repeat in range(repeats):
        order = keys[repeat % len(keys):] + keys[: repeat % len(keys)]  # rotate, so no method always goes first
        for n in sizes if repeat % 2 == 0 else sizes[::-1]:
            for key in order:
                with quiet_stderr():
                    start, cpu_start = time.perf_counter(), time.process_time()
                    functions[key](n)
                    times[(key, n)].append(time.perf_counter() - start)
                    cpu_times[(key, n)].append(time.process_time() - cpu_start)
    return times, cpu_times


def rates(times, key, sizes, pick):
    n1, n2 = sizes
    t1, t2 = pick(times[(key, n1)]), pick(times[(key, n2)])
    if t2 <= t1:
        return float("nan"), float("nan")
    rate = (n2 - n1) / (t2 - t1)
    return rate, t1 - n1 / rate


_LAUNCHER = """
import os, subprocess, sys
process = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
error = process.stderr.read()
_, status, usage = os.wait4(process.pid, 0)
if os.waitstatus_to_exitcode(status) != 0:
    sys.exit(error.decode(errors="replace"))
print(usage.ru_maxrss)
"""


def peak_rss(args, keras_path, shape, workdir):
    """Peak RSS (MB) and wall time of `gamornet predict` subprocesses on .npy files of the RSS sizes."""
    thresholds = [] if args.input_shape in ("SDSS", "CANDELS") else ["--thresholds", "0.7,0.7"]
    block = np.random.default_rng(1).normal(100.0, 10.0, size=(min(500, args.rss_sizes[1]),) + shape)
    block = block.astype(np.float32)
    results = []
    for n in args.rss_sizes:
        path = os.path.join(workdir, f"rss_{n}.npy")
        stack = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n,) + shape)
        for start in range(0, n, len(block)):
            stop = min(start + len(block), n)
            stack[start:stop] = block[: stop - start]
        stack.flush()
        del stack
        command = [sys.executable, "-m", "gamornet.cli.main", "predict", path, "--model", keras_path, "--input-shape",
                   args.input_shape, "--batch-size", str(args.batch_size), *thresholds, "--no-progress",
                   "--output", os.path.join(workdir, f"rss_{n}.csv")]
        start = time.perf_counter()
        # A small launcher starts the run and reads its peak RSS: a child forked straight from this
        # (large) process would inherit this process's RSS as the starting point of its own peak.
        launched = subprocess.run([sys.executable, "-c", _LAUNCHER, *command], capture_output=True, text=True)
        seconds = time.perf_counter() - start
        if launched.returncode != 0:
            raise RuntimeError(f"gamornet predict failed on {n} images: {launched.stderr}")
        peak_kilobytes = int(launched.stdout.split()[-1])
        results.append((n, peak_kilobytes / 1024, seconds))
        os.remove(path)
    return results


def main(argv=None):
    args = parse_arguments(argv)
    shape = _shape(args.input_shape)
    n1, n2 = args.sizes
    import tensorflow as tf

    print("GaMorNet prediction throughput")
    print(f"  input shape {shape}, batch size {args.batch_size}, marginal rate between {n1} and {n2} images, "
          f"{args.repeats} repeat(s)")
    print(f"  Python {platform.python_version()}, TensorFlow {tf.__version__}, {os.cpu_count()} CPUs, "
          f"load average at start {' '.join(load_average())}")
    with tempfile.TemporaryDirectory(prefix="gamornet-benchmark-") as workdir:
        start = time.perf_counter()
        with quiet_stderr():
            keras_path, tflearn_prefix = make_model_files(workdir, shape, "b" in args.methods)
        print(f"  model files written in {time.perf_counter() - start:.1f} s")
        images = np.random.default_rng(0).normal(100.0, 10.0, size=(n2,) + shape).astype(np.float32)
        npy_files = {}
        for n in args.sizes:
            npy_files[n] = os.path.join(workdir, f"images_{n}.npy")
            np.save(npy_files[n], images[:n])
        functions = timers(args, shape, images, npy_files, keras_path, tflearn_prefix, workdir)
        times, cpu_times = time_methods(functions, args.sizes, args.repeats)
        cpu = {key: rates(cpu_times, key, args.sizes, min) for key in functions}

        best = {key: rates(times, key, args.sizes, min) for key in functions}
        median = {key: rates(times, key, args.sizes, statistics.median) for key in functions}
        nan = float("nan")
        floor = {name: table.get("d", (nan,))[0] for name, table in (("median", median), ("best", best), ("cpu", cpu))}
        print()
        print(f"{'method':<36} {'images/s':>8} {'x floor':>7} {'fixed s':>7} | {'best':>6} {'x floor':>7} | "
              f"{'img/CPU-s':>9} {'x floor':>7} | target (median)")
        for key in functions:
            rate, fixed = median[key]
            ratio = rate / floor["median"]
            if key == "d":
                target = "floor"
            elif args.quick or ratio != ratio:  # too few images for the marginal rate to stand out of the noise
                target = "n/a (sizes too small)"
            else:
                target = ("PASS" if ratio >= 0.9 else "FAIL") + " (>= 0.9)"
            print(f"{METHODS[key]:<36} {rate:>8.1f} {ratio:>7.3f} {fixed:>7.2f} | {best[key][0]:>6.1f} "
                  f"{best[key][0] / floor['best']:>7.3f} | {cpu[key][0]:>9.1f} {cpu[key][0] / floor['cpu']:>7.3f} | "
                  f"{target}")
        print("images/s: marginal wall-clock rate from the median times; fixed s: the intercept (model loading, "
              "start-up);\nbest: the same from the best-of-repeats times; img/CPU-s: marginal images per CPU-second "
              "of this process (all threads)")
        print()
        print("raw times (s), per size, in run order:")
        for key in functions:
            print(f"  {key}: " + "; ".join(f"n={n}: " + ", ".join(f"{t:.2f}" for t in times[(key, n)])
                                           for n in args.sizes))
        if "d" in functions:
            floor = functions["d"].floor
            print(f"fixed costs: Keras model build + weight loading {floor.load_seconds:.2f} s, tracing the "
                  f"compiled pass {floor.trace_seconds:.2f} s (each call of (a), (b) and (c) pays its own load)")
        if not args.no_rss:
            print()
            print(f"peak RSS of (c), `python -m gamornet.cli.main predict` on a .npy file (subprocess, ru_maxrss):")
            results = peak_rss(args, keras_path, shape, workdir)
            for n, megabytes, seconds in results:
                print(f"  {n:>6} images: {megabytes:8.1f} MB peak RSS, {seconds:7.1f} s wall "
                      f"({n / seconds:.1f} images/s including start-up)")
            (small, small_mb, _), (large, large_mb, _) = results
            growth = (large_mb - small_mb) / small_mb * 100
            print(f"  peak < 1500 MB: {'PASS' if max(small_mb, large_mb) < 1500 else 'FAIL'}; growth from {small} "
                  f"to {large} images {growth:+.1f} % (< 10 %): {'PASS' if growth < 10 else 'FAIL'}")
    print(f"load average at end {' '.join(load_average())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
