"""gamornet on Dask: throughput of a LocalCluster against one process, per-partition overhead, resume time.

In one run, on the same images (a .npy stack) and the same (random) weights:

(a) one process, two TensorFlow threads: ``gamornet predict stack.npy --output x.csv``
    (``gamornet.cli.main.main`` in this process, the model already loaded);
(b) a LocalCluster of 2 worker processes x 1 thread (TensorFlow limited to one
    thread each): ``predict_catalogue`` into Parquet, the workers' models
    already loaded, in partitions of 1,024 images: several per worker, as in a
    survey, where thousands of partitions keep every worker busy to the end
    (with one partition per worker, the run waits for the slowest);
(c) the per-partition overhead: the cluster's time per partition of one image
    (64 of them), less the time of one image in (b); compared with the time of
    a 4,096-image partition (the default size) at the rate of (b). It holds
    everything a partition costs besides its images: scheduling, the reader,
    the batch loop's start, a Parquet file, the manifest, and the fixed cost of
    the call itself spread over the 64 partitions (and a batch of one image,
    which makes it an upper bound);
(d) resuming the finished run of (b): the same call again, on the complete
    output (no cluster is started), against the first run's time (starting the
    cluster and loading the model on its workers, plus (b)).

(a) and (b) are interleaved over the repeats and judged on their medians; the
load average of the machine is printed before and after.

Targets (issue 15): (b) >= 0.85 x (a); (c) < 2 % of a 4,096-image partition;
(d) < 5 % of the first run.

Usage::

    python benchmarks/distributed.py                # SDSS images, 8,192 of them, 2 repeats: ~10 min on 2 idle cores
    python benchmarks/distributed.py --quick        # tiny sizes, a smoke run
"""

import argparse
import contextlib
import io
import os
import statistics
import sys
import tempfile
import time

import numpy as np

_HERE = os.path.dirname(os.path.abspath(__file__))
# This script's own folder would make "import distributed" find this file instead of Dask's package.
sys.path[:] = [path for path in sys.path if os.path.abspath(path or os.curdir) != _HERE]
sys.path.insert(0, os.path.join(_HERE, "..", "tests"))  # the test helpers that write legacy model files
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (64 images, partitions of 32), one repeat")
    parser.add_argument("--input-shape", default="SDSS", help="SDSS, CANDELS or X,Y,NDIM (default: SDSS)")
    parser.add_argument("--images", type=int, help="images of the stack (default: 8192)")
    parser.add_argument("--partition-size", type=int, help="images per partition in (b) (default: 1024)")
    parser.add_argument("--reference-partition", type=int, default=4096,
                        help="the partition size (c) is compared with (default: 4096)")
    parser.add_argument("--small-partitions", type=int, help="one-image partitions of (c) (default: 64)")
    parser.add_argument("--repeats", type=int, help="repeats of (a) and (b) (default: 2)")
    args = parser.parse_args(argv)
    args.images = args.images or (64 if args.quick else 8192)
    args.partition_size = args.partition_size or (16 if args.quick else 1024)
    args.small_partitions = args.small_partitions or (8 if args.quick else 64)
    args.repeats = args.repeats or (1 if args.quick else 2)
    return args


def _shape(text):
    from gamornet._utils.checks import check_input_shape

    return check_input_shape(text if text in ("SDSS", "CANDELS") else tuple(int(v) for v in text.split(",")))


def load_average():
    try:
        with open("/proc/loadavg") as stream:
            return " ".join(stream.read().split()[:3])
    except OSError:
        return "?"


@contextlib.contextmanager
def quiet_stderr():
    """Keep progress bars and reports out of the benchmark's output."""
    with contextlib.redirect_stderr(io.StringIO()):
        yield


def make_inputs(folder, shape, n_images):
    """Random Keras-initialised weights in a Keras 2 file, and a .npy stack of galaxy-like images."""
    import reference
    from legacy_files import write_keras2_file

    from gamornet import keras_module

    network = keras_module.gamornet_build_model_keras(shape)
    weights = [tuple(layer.get_weights()) for layer in network.layers if layer.weights]
    model = write_keras2_file(os.path.join(folder, "model.hdf5"), weights, layout="weights")
    stack = os.path.join(folder, "stack.npy")
    array = np.lib.format.open_memmap(stack, mode="w+", dtype=np.float32, shape=(n_images,) + tuple(shape))
    for start in range(0, n_images, 512):
        count = min(512, n_images - start)
        array[start : start + count] = reference.galaxy_images(count, shape, seed=start)
    array.flush()
    del array
    return model, stack


def _warm_worker(spec):
    from gamornet.survey import distributed

    distributed._worker_predictor(spec)
    return os.getpid()


def _cpu_seconds():
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(function, client=None):
    """(wall seconds, CPU seconds) of ``function()``: of this process, plus the workers' when a client is given."""
    def cpu():
        return _cpu_seconds() + (sum(client.run(_cpu_seconds).values()) if client is not None else 0.0)

    start, cpu_start = time.perf_counter(), cpu()
    with quiet_stderr():
        function()
    return time.perf_counter() - start, cpu() - cpu_start


def run(args):
    with tempfile.TemporaryDirectory(prefix="gamornet-distributed-benchmark-") as folder:
        measure(args, folder)


def measure(args, folder):
    from gamornet.cli import main as cli
    from gamornet.survey import distributed

    shape = _shape(args.input_shape)
    shape_option = ",".join(map(str, shape))
    model, stack = make_inputs(folder, shape, args.images)
    options = {"input_shape": shape, "thresholds": (0.7, 0.7)}
    single = ["predict", stack, "--model", model, "--input-shape", shape_option, "--thresholds", "0.7,0.7",
              "--no-progress", "--output", os.path.join(folder, "single.csv")]
    print(f"{args.images} images of shape {shape}, partitions of {args.partition_size}; {os.cpu_count()} CPUs; "
          f"load average before: {load_average()}")
    timed(lambda: cli.main(single[:1] + [f"{stack}[0:64]"] + single[2:]))  # (a) loads its model once
    wall = {"a": [], "b": []}
    cpu = {"a": [], "b": []}

    start = time.perf_counter()
    with distributed._connected(2) as client:
        spec = distributed.run_settings(model, shape, "keras", (0.7, 0.7), args.partition_size, None, False, {}).spec
        pids = client.run(_warm_worker, spec)
        startup = time.perf_counter() - start
        for repeat in range(args.repeats):
            for key in ("a", "b") if repeat % 2 == 0 else ("b", "a"):
                if key == "a":
                    seconds, cpu_seconds = timed(lambda: cli.main(single))
                else:
                    output = os.path.join(folder, f"run{repeat}.parquet")
                    seconds, cpu_seconds = timed(lambda: distributed.predict_catalogue(
                        stack, model, output, client=client, partition_size=args.partition_size, **options), client)
                wall[key].append(seconds)
                cpu[key].append(cpu_seconds)
        small, _ = timed(lambda: distributed.predict_catalogue(
            f"{stack}[0:{args.small_partitions}]", model, os.path.join(folder, "small.parquet"), client=client,
            partition_size=1, **options))
    resume, _ = timed(lambda: distributed.predict_catalogue(stack, model, output, client=2,
                                                            partition_size=args.partition_size, **options))
    report(args, wall, cpu, startup, small, resume, len(pids))


def report(args, times, cpu, startup, small, resume, workers):
    n = args.images
    single, cluster = statistics.median(times["a"]), statistics.median(times["b"])
    image_seconds = cluster * workers / n  # one image on one worker of (b)
    partition = args.reference_partition * image_seconds
    overhead = small * workers / args.small_partitions - image_seconds
    first = startup + cluster
    print(f"load average after: {load_average()}")
    for key, name, seconds in (("a", "(a) one process, 2 threads:", single),
                               ("b", "(b) LocalCluster 2 x 1 thread:", cluster)):
        listed = ", ".join(f"{value:.1f}" for value in times[key])
        print(f"{name:<36}{n / seconds:8.1f} images/s   (times {listed} s)")
    print(f"    starting the cluster and loading the model on its {workers} workers: {startup:.1f} s")
    print(f"(c) per-partition overhead:         {overhead * 1e3:8.1f} ms      ({args.small_partitions} one-image "
          f"partitions in {small:.1f} s; a {args.reference_partition}-image partition takes {partition:.1f} s)")
    print(f"(d) resuming the finished run:      {resume:8.2f} s       (first run: {first:.1f} s)")
    for key, name in (("a", "(a)"), ("b", "(b)")):
        per_image = statistics.median(cpu[key]) / n
        print(f"    CPU time per image {name}: {per_image * 1e3:.1f} ms, that is {per_image * 1e6 / 3600:.1f} "
              "core-hours per million images")
    checks = [
        ("(b) / (a) >= 0.85", single / cluster, single / cluster >= 0.85),
        ("(c) / partition < 2 %", overhead / partition, overhead / partition < 0.02),
        ("(d) / first run < 5 %", resume / first, resume / first < 0.05),
    ]
    for name, value, ok in checks:
        print(f"  {name:<24} {value:7.3f}   {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    run(parse_arguments())
