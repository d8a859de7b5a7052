"""The cost of MC-dropout predictions, against plain predictions, in one run.

On the same images and the same (random, Keras-initialised) weights, through
the same predictor (:func:`gamornet.load_predictor`), it times

(a) plain predictions (``mc_samples=0``): one forward pass per image;
(b) MC dropout with N draws per image (``mc_samples=N``, default 30): the
    convolutional part and the first dense layer once per image, the rest of
    the head once per draw; the mean, spread, entropy and mutual information
    of the draws included.

Both run in one process, interleaved over the repeats (a, b, a, b ...) after
a warm-up batch each, so a burst of load from other programs hits both. The
ratio is rate(b) / rate(a) per repeat; the target is judged on the median
ratio and the per-repeat ratios are shown beside it.

Target (issue 12): with 30 draws, rate(b) >= 0.5 x rate(a).

Usage::

    python benchmarks/mc_dropout.py                          # SDSS images, 30 draws, 512 images x 3 repeats
    python benchmarks/mc_dropout.py --input-shape CANDELS
    python benchmarks/mc_dropout.py --backend tflearn        # the same engine, from a TFLearn checkpoint
    python benchmarks/mc_dropout.py --quick                  # tiny sizes, a smoke run
"""

import argparse
import contextlib
import io
import os
import platform
import statistics
import sys
import tempfile
import time

import numpy as np

import gamornet.models.network  # noqa: F401  (TensorFlow imported quietly, then Keras: no start-up lines)

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(_HERE, "..", "tests"))  # the test helpers that write model files


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input-shape", default="SDSS", help="SDSS, CANDELS or X,Y,NDIM (default: SDSS)")
    parser.add_argument("--backend", choices=("keras", "tflearn"), default="keras",
                        help="the model file's format (default: keras)")
    parser.add_argument("--samples", type=int, default=30, help="MC-dropout draws per image (default: 30)")
    parser.add_argument("--images", type=int, default=None, help="images per timing (default: 512)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=None, help="repeats of each timing (default: 3)")
    parser.add_argument("--quick", action="store_true", help="16 images, one repeat: a smoke run")
    args = parser.parse_args(argv)
    args.images = args.images or (16 if args.quick else 512)
    args.repeats = args.repeats or (1 if args.quick else 3)
    return args


def _shape(text):
    from gamornet.presets import INPUT_SHAPES

    if text in INPUT_SHAPES:
        return tuple(INPUT_SHAPES[text])
    return tuple(int(part) for part in text.split(","))


def load_average():
    try:
        return [f"{value:.1f}" for value in os.getloadavg()]
    except OSError:  # pragma: no cover - not on every platform
        return ["?"]


def make_model_file(folder, shape, backend):
    """Random Keras-initialised weights, as a Keras 2 HDF5 file or a TFLearn checkpoint."""
    from gamornet import keras_module

    model = keras_module.gamornet_build_model_keras(shape)
    weights = [tuple(layer.get_weights()) for layer in model.layers if layer.weights]
    if backend == "keras":
        from legacy_files import write_keras2_file

        return write_keras2_file(os.path.join(folder, "model.hdf5"), weights)
    from tflearn_files import write_tflearn_checkpoint

    return write_tflearn_checkpoint(os.path.join(folder, "check-1"), weights, shape)


def time_predictors(predictors, images, batch_size, repeats):
    """{name: [seconds per repeat]}, the predictors interleaved within each repeat."""
    times = {name: [] for name in predictors}
    for predictor in predictors.values():
        predictor.predict(images[:batch_size], batch_size=batch_size)  # warm-up: tracing, first allocations
    for _ in range(repeats):
        for name, predictor in predictors.items():
            start = time.perf_counter()
            predictor.predict(images, batch_size=batch_size)
            times[name].append(time.perf_counter() - start)
    return times


def main(argv=None):
    args = parse_arguments(argv)
    shape = _shape(args.input_shape)
    import tensorflow as tf

    import gamornet

    print("GaMorNet MC-dropout cost")
    print(f"  input shape {shape}, backend {args.backend}, {args.samples} draws, {args.images} images, "
          f"batch size {args.batch_size}, {args.repeats} repeat(s)")
    print(f"  Python {platform.python_version()}, TensorFlow {tf.__version__}, {os.cpu_count()} CPUs, "
          f"TF_ENABLE_ONEDNN_OPTS={os.environ.get('TF_ENABLE_ONEDNN_OPTS', '(unset)')}, "
          f"load average at start {' '.join(load_average())}")
    with tempfile.TemporaryDirectory(prefix="gamornet-benchmark-") as workdir:
        with contextlib.redirect_stderr(io.StringIO()):
            path = make_model_file(workdir, shape, args.backend)
        images = np.random.default_rng(0).normal(100.0, 10.0, size=(args.images,) + shape).astype(np.float32)
        with gamornet.load_predictor(path, shape, args.backend) as plain, \
                gamornet.load_predictor(path, shape, args.backend, mc_samples=args.samples, seed=0) as mc:
            times = time_predictors({"plain": plain, "mc": mc}, images, args.batch_size, args.repeats)
    ratios = [plain_time / mc_time for plain_time, mc_time in zip(times["plain"], times["mc"])]
    median_ratio = statistics.median(ratios)
    print()
    print(f"  {'':28s} {'images/s (median)':>18s}  per repeat")
    for name, label in (("plain", "(a) plain"), ("mc", f"(b) MC dropout, {args.samples} draws")):
        rates = [args.images / seconds for seconds in times[name]]
        print(f"  {label:28s} {statistics.median(rates):18.1f}  {' '.join(f'{rate:.1f}' for rate in rates)}")
    print(f"  ratio (b)/(a): median {median_ratio:.3f}; per repeat {' '.join(f'{ratio:.3f}' for ratio in ratios)}")
    met = median_ratio >= 0.5
    print(f"  target (b) >= 0.5 x (a): {'met' if met else 'NOT met'}"
          f"   (load average at end {' '.join(load_average())})")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
