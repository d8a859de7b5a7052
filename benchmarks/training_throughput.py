"""Training throughput of GaMorNet (Keras), against its compiled step's compute alone, with a profile per epoch.

In one run, on the same images, for each number of images per epoch (2,048,
8,192 and 32,768 by default; CANDELS shape, batch 64, SGD with momentum 0.9),
it trains each method for a few epochs and times every epoch after the first
(the first pays for tracing and for reading a cached catalogue):

(a) the floor: the same network and optimizer in a bare compiled train step
    (a ``tf.function`` with a ``GradientTape``) on batches made into tensors
    beforehand (a pool of at most 128 batches, used in turn: the arithmetic
    does not depend on the pixel values), so nothing but the step's compute;
(n) the old floor of this benchmark, for comparison with earlier figures: the
    same step fed numpy slices of the arrays in a new random order each epoch
    (a copy and a conversion per step);
(b) ``gamornet_train_keras`` on the arrays in memory, as the command line
    runs it: resumable (the state committed after every epoch), a validation
    set of one batch (64 images) and metrics.csv;
(c) the same on a catalogue of the same images as FITS files, ``cache='auto'``
    (they fit, so they are read once into memory);
(d) the same, ``cache=False``: every epoch decodes every FITS file again.

Each epoch of (b)-(d) is split by the training loop (``gamornet.training._loop.EPOCH_PROFILES``)
into the time in the compiled steps, waiting for the input pipeline, in
validation, in the end-of-epoch work (the resumable state, of which the part
spent committing it is shown apart, metrics.csv) and the rest. Methods are
interleaved within each repeat (in rotated order); a ratio to the floor is
taken within each repeat, and the report gives the medians over repeats and
their spread (min-max), which shows how noisy the shared machine was.

Targets (issue 29): (b) >= 0.95 x (a) and (c) >= 0.9 x (a), at 8,192 and
32,768 images per epoch.

It can also measure the peak resident memory (RSS) of ``gamornet train`` on
catalogues of 2,000 and 8,000 FITS files, streamed and read into memory
(``--rss``): streamed memory must not grow with the number of images.

Usage::

    python benchmarks/training_throughput.py                      # all sizes: hours on 2 cores
    python benchmarks/training_throughput.py --sizes 2048,8192 --repeats 3 --methods anbc
    python benchmarks/training_throughput.py --quick               # tiny sizes, a smoke run
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
    "a": "(a) compiled step, tensors made before",
    "n": "(n) compiled step fed numpy (old floor)",
    "b": "(b) gamornet_train_keras, arrays",
    "c": "(c) FITS catalogue, read once",
    "d": "(d) FITS catalogue, streamed",
}
VALIDATION_IMAGES = 64
#: At most this many distinct batches are made into tensors for the floor (a), then used in turn.
FLOOR_POOL = 128
SHARES = ("steps", "input", "validation", "state", "files", "rest")


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="64 images, 2 epochs, 1 repeat: a smoke run")
    parser.add_argument("--input-shape", default="CANDELS", help="SDSS, CANDELS or X,Y,NDIM (default: CANDELS)")
    parser.add_argument("--sizes", default=None, help="images per epoch, comma-separated (default: 2048,8192,32768)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs per run; all but the first are timed "
                        "(default: 3)")  # fmt: skip
    parser.add_argument("--repeats", type=int, default=None, help="repeats of every run (default: 3)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--methods", default="anbc", help="which of a, n, b, c, d to time (default: anbc)")
    parser.add_argument("--rss", action="store_true", help="also measure the peak RSS of streamed and cached runs")
    parser.add_argument("--rss-sizes", default=None, help="the two catalogue sizes of the RSS runs (default: 2000,8000)")
    parser.add_argument("--no-rss", action="store_true", help=argparse.SUPPRESS)  # the default now; kept for old calls
    args = parser.parse_args(argv)
    args.sizes = tuple(int(value) for value in (args.sizes or ("64" if args.quick else "2048,8192,32768")).split(","))
    args.epochs = args.epochs or (2 if args.quick else 3)
    args.rss_sizes = tuple(int(value) for value in (args.rss_sizes or ("100,400" if args.quick else "2000,8000")).split(","))
    args.repeats = args.repeats or (1 if args.quick else 3)
    if "a" not in args.methods:
        args.methods = "a" + args.methods
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
    """(a) and (n): a fresh network and optimizer per run, a tf.function step with a GradientTape, no Keras loop."""

    def __init__(self, images, labels, batch_size, numpy_fed):
        import tensorflow as tf

        self.tf, self.images, self.labels, self.batch_size, self.numpy_fed = tf, images, labels, batch_size, numpy_fed
        if not numpy_fed:
            n_batches = min(FLOOR_POOL, len(images) // batch_size)
            order = np.random.default_rng(1).permutation(len(images))[: n_batches * batch_size].reshape(n_batches, -1)
            self.pool = [(tf.constant(images[rows]), tf.constant(labels[rows])) for rows in order]

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

        n, profiles = len(self.images), []
        steps = n // self.batch_size
        rng = np.random.default_rng(0)
        for _ in range(epochs):
            start = time.perf_counter()
            if self.numpy_fed:
                order = rng.permutation(n)
                for index in range(steps):
                    rows = order[index * self.batch_size : (index + 1) * self.batch_size]
                    float(step(self.images[rows], self.labels[rows]))
            else:
                for index in range(steps):
                    float(step(*self.pool[index % len(self.pool)]))
            seconds = time.perf_counter() - start
            profiles.append(dict(epoch=seconds, steps=seconds, images=steps * self.batch_size))
        return profiles


class StateTimer:
    """Times the commits of the resumable state (within the end-of-epoch callbacks)."""

    def __init__(self):
        from gamornet.training.resume import ResumableState

        self.seconds, original = [], ResumableState.commit

        def timed(state, *arguments, **keywords):
            start = time.perf_counter()
            try:
                return original(state, *arguments, **keywords)
            finally:
                self.seconds.append(time.perf_counter() - start)

        ResumableState.commit = timed


def library_run(train, n_images, state_timer):
    """Runs ``train()`` and returns its epochs' profiles from the training loop."""
    from gamornet.training import _loop

    _loop.EPOCH_PROFILES, state_timer.seconds = [], []
    try:
        train()
        profiles = _loop.EPOCH_PROFILES
    finally:
        _loop.EPOCH_PROFILES = None
    for profile, state in zip(profiles, state_timer.seconds):
        profile["state"], profile["files"] = state, profile["callbacks"] - state
        profile["rest"] = profile["epoch"] - sum(profile[key] for key in SHARES[:-1])
        profile["images"] = n_images
    return profiles


def timers(args, shape, images, labels, catalogues, workdir):
    """A function per method: epochs -> the profiles of those epochs."""
    from gamornet.keras_module import gamornet_train_keras

    validation = (images[:VALIDATION_IMAGES], labels[:VALIDATION_IMAGES])
    folder = os.path.join(workdir, "run")
    common = dict(files_save_path=folder, batch_size=args.batch_size, verbose=0, resume=True, fresh=True, seed=0)
    state_timer = StateTimer()
    n = len(images)
    methods = {
        "a": lambda: (lambda floor: lambda epochs: floor(epochs, shape))(Floor(images, labels, args.batch_size, False)),
        "n": lambda: (lambda floor: lambda epochs: floor(epochs, shape))(Floor(images, labels, args.batch_size, True)),
        "b": lambda: lambda epochs: library_run(lambda: gamornet_train_keras(
            images, labels, *validation, shape, epochs=epochs, **common), n, state_timer),
        "c": lambda: lambda epochs: library_run(lambda: gamornet_train_keras(
            catalogues[0], None, catalogues[1], None, shape, epochs=epochs, cache="auto", **common), n, state_timer),
        "d": lambda: lambda epochs: library_run(lambda: gamornet_train_keras(
            catalogues[0], None, catalogues[1], None, shape, epochs=epochs, cache=False, **common), n, state_timer),
    }  # fmt: skip
    return {key: methods[key]() for key in args.methods}


def time_methods(functions, epochs, repeats):
    """{method: [profiles of the timed epochs, per repeat]}, the methods interleaved in rotated order."""
    results = {key: [] for key in functions}
    keys = list(functions)
    for repeat in range(repeats):
        for key in keys[repeat % len(keys):] + keys[: repeat % len(keys)]:
            with quiet():
                profiles = functions[key](epochs)
            results[key].append(profiles[1:])  # the first epoch pays for tracing and caching
    return results


def _per_image(profiles, share):
    """Seconds of ``share`` per image, over the timed epochs of one repeat."""
    return sum(profile.get(share, 0.0) for profile in profiles) / sum(profile["images"] for profile in profiles)


def report(results, args, n_images):
    floor = [_per_image(profiles, "epoch") for profiles in results["a"]]
    print()
    print(f"{n_images} images per epoch ({args.repeats} repeat(s) of {args.epochs} epochs, the first not timed):")
    print(f"  {'method':<40} {'images/s':>8} {'x (a)':>6} {'min-max x (a)':>14} | seconds per epoch: "
          + " ".join(f"{share:>10}" for share in SHARES) + " | target")  # fmt: skip
    for key, repeats in results.items():
        per_image = [_per_image(profiles, "epoch") for profiles in repeats]
        ratios = [f / p for f, p in zip(floor, per_image)]
        shares = [statistics.median(_per_image(profiles, share) for profiles in repeats) * n_images
                  if any(share in profile for profiles in repeats for profile in profiles) else float("nan")
                  for share in SHARES]  # fmt: skip
        target = ""
        threshold = {"b": 0.95, "c": 0.9}.get(key)
        if threshold and n_images >= 8192 and not args.quick:
            target = ("PASS" if statistics.median(ratios) >= threshold else "FAIL") + f" (>= {threshold} x (a))"
        print(f"  {METHODS[key]:<40} {1 / statistics.median(per_image):>8.1f} {statistics.median(ratios):>6.3f} "
              f"{min(ratios):>6.3f}-{max(ratios):<7.3f} | {'':>18} " + " ".join(f"{value:>10.2f}" for value in shares)
              + f" | {target}")  # fmt: skip
    print("  x (a): the floor's epoch time over the method's, within each repeat (median; min-max over repeats).")
    print("  Seconds per epoch: medians over repeats, at this epoch size; steps: in the compiled step; input: waiting")
    print("  for the next batch; state: committing the resumable state; files: metrics.csv and other callbacks.")
    print("  raw epoch seconds, per repeat:")
    for key, repeats in results.items():
        print(f"    {key}: " + "; ".join(", ".join(f"{p['epoch']:.2f}" for p in profiles) for profiles in repeats))


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


def main(argv=None):
    args = parse_arguments(argv)
    shape = _shape(args.input_shape)
    import tensorflow as tf

    print("GaMorNet training throughput")
    print(f"  input shape {shape}, batch size {args.batch_size}, images per epoch {args.sizes}, {args.epochs} epochs "
          f"per run (the first not timed), {args.repeats} repeat(s); validation: {VALIDATION_IMAGES} images")
    print(f"  Python {platform.python_version()}, TensorFlow {tf.__version__}, {os.cpu_count()} CPUs, no GPU used "
          f"({len(tf.config.list_physical_devices('GPU'))} visible), load average at start {' '.join(load_average())}")
    with tempfile.TemporaryDirectory(prefix="gamornet-training-benchmark-") as workdir:
        for n_images in args.sizes:
            images, labels = galaxy_images(n_images, shape)
            catalogues = None
            if set(args.methods) & set("cd"):
                start = time.perf_counter()
                catalogues = (write_catalogue(workdir, f"train_{n_images}", images, labels),
                              write_catalogue(workdir, f"validation_{n_images}", images[:VALIDATION_IMAGES],
                                              labels[:VALIDATION_IMAGES]))  # fmt: skip
                print(f"  {n_images} FITS files written in {time.perf_counter() - start:.1f} s")
            functions = timers(args, shape, images, labels, catalogues, workdir)
            report(time_methods(functions, args.epochs, args.repeats), args, n_images)
            print(f"  load average now {' '.join(load_average())}", flush=True)
        if args.rss:
            validation = write_catalogue(workdir, "rss_validation", *(part[:VALIDATION_IMAGES] for part in images_labels(
                shape)))  # fmt: skip
            report_rss(peak_rss(args, shape, workdir, validation), args.rss_sizes)
    print(f"load average at end {' '.join(load_average())}")
    return 0


def images_labels(shape):
    return galaxy_images(VALIDATION_IMAGES, shape, seed=3)


if __name__ == "__main__":
    sys.exit(main())
