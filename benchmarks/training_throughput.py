"""Training throughput of GaMorNet (Keras), against a bare compiled train step.

In one run, on the same images, it measures the training images/s of

(a) a bare compiled train step (the floor to reach): the same network and
    optimizer (SGD with momentum 0.9), a ``tf.function`` with a
    ``GradientTape``, over batches gathered from the images in memory in a new
    random order each epoch; no metrics, no validation, no callbacks;
(b) ``gamornet_train_keras`` on the arrays in memory (the 0.4.x call), with a
    validation set of one batch (64 images) and its metrics.csv;
(c) ``gamornet_train_keras`` on a catalogue of the same images as FITS files
    on disk, ``cache='auto'`` (they fit, so they are read once into memory);
(d) the same, ``cache=False``: every epoch decodes every FITS file again;
(e) what gamornet_train_keras did before this benchmark's fixes: ``model.fit``
    on the arrays with Keras' own array adapter (``shuffle=True``), the same
    validation set and metrics.csv callback.

Throughput is the marginal rate between 1 and 3 epochs (of 2,048 CANDELS
images, batch 64, by default): 2 x n / (time(3 epochs) - time(1 epoch)), so
fixed costs (building the network, tracing, reading a cached catalogue)
cancel; they are shown as the intercept. Methods and epoch counts are
interleaved over the repeats; the targets are judged on the median times. The
rate per CPU-second of this process is shown too: the machine may be shared,
and other programs disturb it less.

It also measures the peak resident memory (RSS) of ``gamornet train`` on
catalogues of 2,000 and 8,000 FITS files, streamed (``--cache stream``), one
epoch, as a subprocess; and, for comparison, read into memory
(``--cache memory``), which grows with the number of images by design.

Targets (issue 16): (b) >= 0.95 x (a); (c) >= 0.9 x (b); streamed peak RSS
grows by less than 10 % from 2,000 to 8,000 images.

Usage::

    python benchmarks/training_throughput.py            # the full benchmark, ~30 min on 2 idle cores
    python benchmarks/training_throughput.py --quick    # tiny sizes, a smoke run
"""

import argparse
import contextlib
import csv
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
sys.path.insert(0, _HERE)
from predict_throughput import _shape, load_average  # noqa: E402  (the same input shapes and load line)

METHODS = {
    "a": "(a) compiled train step (floor)",
    "b": "(b) gamornet_train_keras, arrays",
    "c": "(c) FITS catalogue, read once",
    "d": "(d) FITS catalogue, streamed",
    "e": "(e) model.fit on arrays (before)",
}
VALIDATION_IMAGES = 64


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="64 images, 1 repeat, RSS at 100 and 400: a smoke run")
    parser.add_argument("--input-shape", default="CANDELS", help="SDSS, CANDELS or X,Y,NDIM (default: CANDELS)")
    parser.add_argument("--images", type=int, default=None, help="training images per epoch (default: 2048)")
    parser.add_argument("--epochs", default="1,3", help="the two epoch counts of the marginal rate (default: 1,3)")
    parser.add_argument("--rss-sizes", default=None, help="the two catalogue sizes of the RSS runs (default: 2000,8000)")
    parser.add_argument("--repeats", type=int, default=None, help="repeats of every timing (default: 3)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--methods", default="abcde", help="which of a, b, c, d, e to time (default: abcde)")
    parser.add_argument("--no-rss", action="store_true", help="skip the peak-RSS runs")
    args = parser.parse_args(argv)
    args.images = args.images or (64 if args.quick else 2048)
    args.epochs = tuple(int(value) for value in args.epochs.split(","))
    args.rss_sizes = tuple(int(value) for value in (args.rss_sizes or ("100,400" if args.quick else "2000,8000")).split(","))
    args.repeats = args.repeats or (1 if args.quick else 3)
    return args


@contextlib.contextmanager
def quiet():
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        yield


def galaxy_images(n, shape, seed=0):
    """Noisy round galaxies with random sizes and brightness, and random one-hot labels."""
    rng = np.random.default_rng(seed)
    rows, columns = np.mgrid[0 : shape[0], 0 : shape[1]] - np.array(shape[:2])[:, None, None] / 2
    radius = np.hypot(rows, columns)
    sizes, peaks = rng.uniform(2, 8, n), rng.uniform(20, 200, n)
    images = np.empty((n,) + tuple(shape), np.float32)
    for index in range(n):
        image = peaks[index] * np.exp(-radius / sizes[index]) + rng.normal(0, 1, shape[:2])
        images[index] = image[..., None]
    labels = np.eye(3, dtype=np.float32)[rng.integers(0, 3, n)]
    return images, labels


def write_catalogue(folder, name, images, labels):
    """One FITS file per image and a CSV catalogue naming them."""
    from astropy.io import fits

    os.makedirs(os.path.join(folder, name), exist_ok=True)
    path = os.path.join(folder, f"{name}.csv")
    with open(path, "w", newline="") as stream:
        writer = csv.writer(stream)
        writer.writerow(["path", "label"])
        for index, (image, label) in enumerate(zip(images, labels)):
            relative = f"{name}/{index:06d}.fits"
            fits.writeto(os.path.join(folder, relative), image[..., 0], overwrite=True)
            writer.writerow([relative, int(np.argmax(label))])
    return path


class Floor:
    """(a): a fresh network and optimizer per run, a tf.function step with a GradientTape, no Keras loop."""

    def __init__(self, images, labels, batch_size):
        import tensorflow as tf

        self.tf = tf
        self.images, self.labels = tf.constant(images), tf.constant(labels)
        self.batch_size = batch_size

    def __call__(self, epochs, shape):
        import keras

        tf = self.tf
        from gamornet.keras_module import gamornet_build_model_keras

        model = gamornet_build_model_keras(shape)
        optimizer = keras.optimizers.SGD(learning_rate=1e-4, momentum=0.9)
        loss_function = keras.losses.CategoricalCrossentropy()

        @tf.function
        def step(images, labels):
            with tf.GradientTape() as tape:
                loss = loss_function(labels, model(images, training=True))
            gradients = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(gradients, model.trainable_variables))
            return loss

        n = int(self.images.shape[0])
        for _ in range(epochs):
            order = tf.random.shuffle(tf.range(n))
            for start in range(0, n, self.batch_size):
                batch = order[start : start + self.batch_size]
                step(tf.gather(self.images, batch), tf.gather(self.labels, batch))


def fit_on_arrays_as_before(images, labels, validation, shape, batch_size, folder, epochs):
    """(e): Keras' model.fit on the arrays, its array adapter shuffling, with the metrics.csv callback."""
    from gamornet import keras_module
    from gamornet.training import _loop as _training_loop
    from gamornet.training.keras import check_compile_options, compile_model

    model = keras_module.gamornet_build_model_keras(shape)
    optimizer, loss = check_compile_options(0.0001, 0.9, 0.0, False, "categorical_crossentropy")
    compile_model(model, optimizer, loss)
    callback = _training_loop.MetricsAndCheckpoints(folder, 0)
    model.fit(images, labels, validation_data=validation, batch_size=batch_size, epochs=epochs, shuffle=True,
              callbacks=[callback], verbose=0)  # fmt: skip


def timers(args, shape, images, labels, catalogues, workdir):
    """A function per method: epochs -> trains for that many epochs."""
    from gamornet.keras_module import gamornet_train_keras

    validation = (images[:VALIDATION_IMAGES], labels[:VALIDATION_IMAGES])
    folder = os.path.join(workdir, "run")
    common = dict(files_save_path=folder, batch_size=args.batch_size, verbose=0)
    result = {}
    if "a" in args.methods:
        floor = Floor(images, labels, args.batch_size)
        result["a"] = lambda epochs: floor(epochs, shape)
    if "b" in args.methods:
        result["b"] = lambda epochs: gamornet_train_keras(images, labels, *validation, shape, epochs=epochs, **common)
    if "c" in args.methods:
        result["c"] = lambda epochs: gamornet_train_keras(catalogues[0], None, catalogues[1], None, shape,
                                                          epochs=epochs, cache="auto", **common)  # fmt: skip
    if "d" in args.methods:
        result["d"] = lambda epochs: gamornet_train_keras(catalogues[0], None, catalogues[1], None, shape,
                                                          epochs=epochs, cache=False, **common)  # fmt: skip
    if "e" in args.methods:
        result["e"] = lambda epochs: fit_on_arrays_as_before(images, labels, validation, shape, args.batch_size,
                                                             os.makedirs(folder, exist_ok=True) or folder, epochs)  # fmt: skip
    return result


def time_methods(functions, epoch_counts, repeats):
    """Wall and CPU seconds (all threads of this process) of every method and epoch count, interleaved."""
    times = {(key, n): [] for key in functions for n in epoch_counts}
    cpu_times = {(key, n): [] for key in functions for n in epoch_counts}
    keys = list(functions)
    for repeat in range(repeats):
        order = keys[repeat % len(keys):] + keys[: repeat % len(keys)]  # rotate, so no method always goes first
        for epochs in epoch_counts if repeat % 2 == 0 else epoch_counts[::-1]:
            for key in order:
                with quiet():
                    start, cpu_start = time.perf_counter(), time.process_time()
                    functions[key](epochs)
                    times[(key, epochs)].append(time.perf_counter() - start)
                    cpu_times[(key, epochs)].append(time.process_time() - cpu_start)
    return times, cpu_times


def rates(times, key, epoch_counts, n_images, pick):
    (e1, e2) = epoch_counts
    t1, t2 = pick(times[(key, e1)]), pick(times[(key, e2)])
    if t2 <= t1:
        return float("nan"), float("nan")
    rate = (e2 - e1) * n_images / (t2 - t1)
    return rate, t1 - e1 * n_images / rate


_LAUNCHER = """
import os, subprocess, sys
process = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
error = process.stderr.read()
_, status, usage = os.wait4(process.pid, 0)
if os.waitstatus_to_exitcode(status) != 0:
    sys.exit(error.decode(errors="replace"))
print(usage.ru_maxrss)
"""


def peak_rss(args, shape, workdir, validation_catalogue):
    """Peak RSS (MB) and wall time of `gamornet train` on FITS catalogues of the RSS sizes, streamed and cached."""
    images, labels = galaxy_images(200, shape, seed=2)
    results = []
    for n in args.rss_sizes:
        repeats = -(-n // len(images))
        catalogue = write_catalogue(workdir, f"rss_{n}", np.tile(images, (repeats, 1, 1, 1))[:n],
                                    np.tile(labels, (repeats, 1))[:n])  # fmt: skip
        for cache in ("stream", "memory"):
            command = [sys.executable, "-m", "gamornet.cli.main", "train", "--catalog", catalogue, "--validation-catalog",
                       validation_catalogue, "--input-shape", args.input_shape, "--output-dir",
                       os.path.join(workdir, f"rss_run_{n}_{cache}"), "--epochs", "1", "--batch-size",
                       str(args.batch_size), "--cache", cache, "--quiet"]  # fmt: skip
            start = time.perf_counter()
            # A small launcher starts the run and reads its peak RSS: a child forked straight from this
            # (large) process would inherit this process's RSS as the starting point of its own peak.
            launched = subprocess.run([sys.executable, "-c", _LAUNCHER, *command], capture_output=True, text=True)
            seconds = time.perf_counter() - start
            if launched.returncode != 0:
                raise RuntimeError(f"gamornet train failed on {n} images: {launched.stderr}")
            results.append((n, cache, int(launched.stdout.split()[-1]) / 1024, seconds))
    return results


def report_rss(results, sizes):
    print()
    print("peak RSS of `python -m gamornet.cli.main train`, one epoch, FITS catalogue (subprocess, ru_maxrss):")
    for n, cache, megabytes, seconds in results:
        print(f"  {n:>6} images, --cache {cache:<6}: {megabytes:8.1f} MB peak RSS, {seconds:7.1f} s wall")
    peaks = {(n, cache): megabytes for n, cache, megabytes, _ in results}
    for cache in ("stream", "memory"):
        growth = (peaks[(sizes[1], cache)] - peaks[(sizes[0], cache)]) / peaks[(sizes[0], cache)] * 100
        verdict = ("PASS" if growth < 10 else "FAIL") + " (< 10 %)" if cache == "stream" else "(grows by design)"
        print(f"  --cache {cache}: growth from {sizes[0]} to {sizes[1]} images {growth:+.1f} % {verdict}")


def report(functions, times, cpu_times, args):
    n = args.images
    median = {key: rates(times, key, args.epochs, n, statistics.median) for key in functions}
    best = {key: rates(times, key, args.epochs, n, min) for key in functions}
    cpu = {key: rates(cpu_times, key, args.epochs, n, min) for key in functions}
    nan = float("nan")
    references = {"a": ("a", 0.95, "b"), "b": ("b", 0.9, "c")}
    floor = {name: table.get("a", (nan,))[0] for name, table in (("median", median), ("best", best), ("cpu", cpu))}
    memory = {name: table.get("b", (nan,))[0] for name, table in (("median", median), ("best", best), ("cpu", cpu))}
    print()
    print(f"{'method':<36} {'images/s':>8} {'x (a)':>6} {'x (b)':>6} {'fixed s':>7} | {'best':>6} {'x (a)':>6} | "
          f"{'img/CPU-s':>9} {'x (a)':>6} {'x (b)':>6} | target (median)")  # fmt: skip
    for key in functions:
        rate, fixed = median[key]
        target = "floor" if key == "a" else ""
        for reference, (name, threshold, checked) in references.items():
            table = floor if reference == "a" else memory
            if key == checked and not args.quick and table["median"] == table["median"]:
                ratio = rate / table["median"]
                target = ("PASS" if ratio >= threshold else "FAIL") + f" (>= {threshold} x ({name}))"
        print(f"{METHODS[key]:<36} {rate:>8.1f} {rate / floor['median']:>6.3f} {rate / memory['median']:>6.3f} "
              f"{fixed:>7.1f} | {best[key][0]:>6.1f} {best[key][0] / floor['best']:>6.3f} | {cpu[key][0]:>9.1f} "
              f"{cpu[key][0] / floor['cpu']:>6.3f} {cpu[key][0] / memory['cpu']:>6.3f} | {target}")  # fmt: skip
    print("images/s: marginal wall-clock rate between the epoch counts, from the median times; fixed s: the "
          "intercept\n(building, tracing, reading a cached catalogue); best: from the best-of-repeats times; "
          "img/CPU-s: per CPU-second\nof this process (all threads); x (a), x (b): ratios to the floor and to "
          "training from arrays")
    print()
    print("raw times (s), per epoch count, in run order:")
    for key in functions:
        print(f"  {key}: " + "; ".join(f"{epochs} epoch(s): " + ", ".join(f"{t:.1f}" for t in times[(key, epochs)])
                                       for epochs in args.epochs))  # fmt: skip


def main(argv=None):
    args = parse_arguments(argv)
    shape = _shape(args.input_shape)
    import tensorflow as tf

    print("GaMorNet training throughput")
    print(f"  input shape {shape}, batch size {args.batch_size}, {args.images} training images, marginal rate "
          f"between {args.epochs[0]} and {args.epochs[1]} epochs, {args.repeats} repeat(s); validation: "
          f"{VALIDATION_IMAGES} images")  # fmt: skip
    print(f"  Python {platform.python_version()}, TensorFlow {tf.__version__}, {os.cpu_count()} CPUs, no GPU used "
          f"({len(tf.config.list_physical_devices('GPU'))} visible), load average at start {' '.join(load_average())}")
    with tempfile.TemporaryDirectory(prefix="gamornet-training-benchmark-") as workdir:
        images, labels = galaxy_images(args.images, shape)
        start = time.perf_counter()
        catalogues = (write_catalogue(workdir, "train", images, labels),
                      write_catalogue(workdir, "validation", images[:VALIDATION_IMAGES], labels[:VALIDATION_IMAGES]))
        print(f"  {args.images} FITS files written in {time.perf_counter() - start:.1f} s")
        functions = timers(args, shape, images, labels, catalogues, workdir)
        times, cpu_times = time_methods(functions, args.epochs, args.repeats)
        report(functions, times, cpu_times, args)
        if not args.no_rss:
            report_rss(peak_rss(args, shape, workdir, catalogues[1]), args.rss_sizes)
    print(f"load average at end {' '.join(load_average())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
