"""The fixed cost of a first and a second ``gamornet_predict_keras`` call with the same model file.

A call builds the network, reads and checks the weights, and traces the
compiled inference step; a second call with the same, unchanged file reuses
all of it from the engine cache (``GAMORNET_MODEL_CACHE``, 2 models by
default). The fixed cost of a call is measured as its time on a single image,
minus the time of predicting that image with the model already built (the
third and later calls), so the ratio compares fixed costs only.

Usage::

    python benchmarks/model_reuse.py                 # SDSS shape, 5 repeats in fresh processes
    python benchmarks/model_reuse.py --input-shape CANDELS --repeats 3
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

_HERE = os.path.dirname(os.path.abspath(__file__))

_CHILD = r"""
import json, os, sys, time
sys.path.insert(0, {tests!r})
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np
from gamornet import keras_module
from legacy_files import write_keras2_file
shape = tuple({shape!r})
path = {path!r}
if not os.path.exists(path):
    model = keras_module.gamornet_build_model_keras(shape)
    write_keras2_file(path, [tuple(layer.get_weights()) for layer in model.layers if layer.weights])
image = np.random.default_rng(0).normal(100.0, 10.0, (1,) + shape).astype(np.float32)
times = []
for _ in range(4):
    start = time.perf_counter()
    keras_module.gamornet_predict_keras(image, path, shape)
    times.append(time.perf_counter() - start)
print(json.dumps(times))
"""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input-shape", default="SDSS", choices=("SDSS", "CANDELS"))
    parser.add_argument("--repeats", type=int, default=5, help="fresh processes (default 5)")
    args = parser.parse_args(argv)
    from gamornet.presets import INPUT_SHAPES

    shape = INPUT_SHAPES[args.input_shape]
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.hdf5")
        script = _CHILD.format(tests=os.path.join(_HERE, "..", "tests"), shape=list(shape), path=path)
        runs = []
        for _ in range(args.repeats + 1):  # the first process writes the model file and is not counted
            output = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
            runs.append(json.loads(output.stdout.strip().splitlines()[-1]))
    runs = runs[1:]
    steady = [statistics.median(run[2:]) for run in runs]
    first = [run[0] - base for run, base in zip(runs, steady)]
    second = [run[1] - base for run, base in zip(runs, steady)]
    ratio = [b / a for a, b in zip(first, second)]
    print(f"input shape {shape}; {args.repeats} fresh processes; load average {open('/proc/loadavg').read().split()[:3]}")
    print(f"fixed cost of the first call:   median {statistics.median(first):.3f} s  (runs {', '.join(f'{t:.3f}' for t in first)})")
    print(f"fixed cost of the second call:  median {statistics.median(second) * 1000:.1f} ms (runs "
          f"{', '.join(f'{t * 1000:.1f}' for t in second)})")
    print(f"second / first: median {statistics.median(ratio):.4f}  (1 / {1 / statistics.median(ratio):.0f})")


if __name__ == "__main__":
    main()
