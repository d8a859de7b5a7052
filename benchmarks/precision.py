"""Speed and agreement of GaMorNet's precisions (fp32, bf16, int8), in one run.

1. Agreement on a trained network (``--model``, for example the one
   ``make demo`` writes): galaxies freshly simulated with the demo's survey
   (``gamornet.demo.run.demo_survey``), preprocessed as the model's
   ``preprocessing.json`` says, predicted in each precision; the share of
   galaxies whose handbook class (``gamornet.science.classify``) differs from fp32's,
   and the largest |p - p_fp32|. int8 is calibrated on the first 300 of these
   galaxies, as a run with no calibration set given is. bf16 is run twice:
   ``bf16`` refines near the boundaries of the run's threshold set (what
   ``gamornet predict --precision bf16`` does), ``bf16-all-rules`` near those
   of every rule (the most probable class and the four handbook sets: what
   ``load_predictor`` protects without ``thresholds`` for images of neither
   handbook data set); the share of galaxies
   each predicted again in fp32 is printed, and the speed of fp32 and both
   bf16 runs on these galaxies is timed as in part 2.
2. Speed: for each input shape (SDSS and CANDELS by default), the marginal
   images/s of each precision's engine (``gamornet.inference.precision.make_engine``) on
   the same images and the same (random, Keras-initialised) weights, as a ratio
   against fp32 measured in the same run. The marginal rate is taken between
   512 and 2,048 images, (n2 - n1) / (time(n2) - time(n1)), from the median
   of 3 interleaved repeats, as ``predict_throughput.py`` does; the rate per
   CPU-second of this process is shown beside it (other programs on a shared
   machine disturb it less). int8's calibration (300 images) is a fixed cost,
   reported apart. A network with random weights gives every galaxy about
   1/3 in each class, all near a boundary, so here each bf16 run predicts
   again in fp32 a fixed share of the images: the shares part 1 measured
   (else those measured on ``make demo``'s network, 2.8 % and 14.3 %), or
   ``--refined-share``. The cost of the refinement depends on how many
   images it takes, not on which. ``bf16-bare`` is the bfloat16 pass alone.

Targets (issue 13): bf16 >= 1.5 x fp32 and int8 >= 3 x fp32 on a CPU with
AVX512-BF16 and VNNI; class changes <= 0.1 % (bf16) and <= 0.5 % (int8).

Usage::

    make demo   # writes demo_output/trained_model.hdf5 and preprocessing.json
    python benchmarks/precision.py --model demo_output/trained_model.hdf5
    python benchmarks/precision.py --quick         # tiny sizes, no trained network: a smoke run
    python benchmarks/precision.py --shapes SDSS --profile   # and where an int8 batch spends its time
"""

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings

import numpy as np

import gamornet.models.network  # noqa: F401  (TensorFlow imported quietly, then Keras: no start-up lines)

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)

from predict_throughput import load_average, quiet_stderr, rates, time_methods  # noqa: E402

PRECISIONS = ("fp32", "bf16", "int8")
TARGETS = {"bf16": (1.5, 0.001), "int8": (3.0, 0.005)}  # speed-up over fp32, largest share of class changes


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes, one repeat, 200 galaxies: a smoke run")
    parser.add_argument("--shapes", default="SDSS,CANDELS", help="input shapes of the speed part (default: SDSS,CANDELS)")
    parser.add_argument("--sizes", default=None, help="the two sizes of the marginal rate (default: 512,2048)")
    parser.add_argument("--repeats", type=int, default=None, help="repeats of every timing (default: 3)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--model", default=None, help="a trained Keras model file (.hdf5) for the agreement part")
    parser.add_argument("--preprocessing", default=None,
                        help="its preprocessing.json (default: beside the model)")
    parser.add_argument("--galaxies", type=int, default=None, help="galaxies of the agreement part (default: 4000)")
    parser.add_argument("--magnitude-range", type=float, nargs=2, default=(19.0, 22.5),
                        help="total magnitudes of the simulated galaxies (default: 19 22.5, as make demo)")
    parser.add_argument("--thresholds", default=None,
                        help="handbook threshold set of the classes (default: keras_<preset of the model>)")
    parser.add_argument("--seed", type=int, default=2024, help="seed of the simulated galaxies (make demo uses 0)")
    parser.add_argument("--refined-share", type=float, default=None,
                        help="share of the images bf16 predicts again in fp32 in the speed part (default: the shares "
                             "measured in the agreement part, else those measured on make demo's network)")
    parser.add_argument("--profile", action="store_true",
                        help="also print where an int8 batch spends its time, layer by layer (OpenVINO's counters)")
    args = parser.parse_args(argv)
    args.sizes = tuple(int(v) for v in (args.sizes or ("8,24" if args.quick else "512,2048")).split(","))
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.galaxies = args.galaxies or (200 if args.quick else 4000)
    if args.refined_share is not None and not 0.0 <= args.refined_share <= 1.0:
        parser.error(f"--refined-share must be a fraction between 0 and 1. Received: {args.refined_share}")
    return args


#: The shares of galaxies bf16 predicted again in fp32 on make demo's network: with the rule of a run that classifies
#: with keras_CANDELS (gamornet predict), and with every rule (the most probable class and the four handbook sets: what
#: load_predictor protects for images of neither handbook data set) (docs/speed.rst).
DEMO_REFINED_SHARES = {"bf16": 0.028, "bf16-all-rules": 0.143}


def share_refinement(share):
    """A :class:`gamornet.inference.bf16.Refinement` that picks the first ``share`` of every batch (for random weights)."""
    from gamornet.inference.bf16 import Refinement

    class ShareRefinement(Refinement):
        def mask(self, probabilities):
            picked = np.zeros(len(probabilities), dtype=bool)
            picked[: int(np.ceil(share * len(probabilities)))] = True
            return picked

    return ShareRefinement()


def engines_for(network, images, cache_folder, refinements):
    """{name: (engine, seconds to make it)}: fp32, bf16 per refinement ({name: Refinement}), int8 calibrated on the
    first 300 images."""
    from gamornet.inference.int8 import DEFAULT_CALIBRATION_SIZE
    from gamornet.inference.precision import make_engine

    engines = {}
    for name in ("fp32",) + tuple(refinements) + ("int8",):
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            engine = make_engine(network, "bf16" if name in refinements else name, cache_folder=cache_folder,
                                 calibration_images=images[:DEFAULT_CALIBRATION_SIZE] if name == "int8" else None,
                                 refinement=refinements.get(name))  # fmt: skip
            if name == "bf16-bare":
                engine.refinement = None
        engines[name] = (engine, time.perf_counter() - start)
    return engines


def time_engines(args, engines, images):
    """(median images/s, images per CPU-second, raw times) of every engine on ``images``, interleaved."""
    functions = {name: (lambda n, engine=engine: run_engine(engine, images[:n], args.batch_size))
                 for name, (engine, _) in engines.items()}
    for function in functions.values():
        function(args.batch_size)  # trace and warm up outside the timings
    times, cpu_times = time_methods(functions, args.sizes, args.repeats)
    median = {name: rates(times, name, args.sizes, statistics.median)[0] for name in functions}
    cpu = {name: rates(cpu_times, name, args.sizes, min)[0] for name in functions}
    return median, cpu, times


def run_engine(engine, images, batch_size):
    """Probabilities of ``images`` in batches, as the predictor's stream runs them (bf16 refines across batches)."""
    batches = ((start, images[start : start + batch_size]) for start in range(0, len(images), batch_size))
    if hasattr(engine, "forward_stream"):
        return np.concatenate([probabilities for _, probabilities in engine.forward_stream(batches)])
    return np.concatenate([engine.forward(batch) for _, batch in batches])


def speed(args, shape_name, workdir, refined_shares):
    """Print the speed table of one input shape."""
    from gamornet._utils.checks import check_input_shape
    from gamornet.keras_module import gamornet_build_model_keras

    shape = check_input_shape(shape_name)
    network = gamornet_build_model_keras(shape)
    images = np.random.default_rng(0).normal(100.0, 10.0, size=(args.sizes[1],) + shape).astype(np.float32)
    refinements = {name: share_refinement(share) for name, share in refined_shares.items()}
    engines = engines_for(network, images, os.path.join(workdir, shape_name), dict(refinements, **{"bf16-bare": None}))
    start_load = " ".join(load_average())
    median, cpu, times = time_engines(args, engines, images)
    print(f"\n{shape_name} {shape}: load average {start_load} before the timings, {' '.join(load_average())} after; "
          "images predicted again in fp32: "
          + ", ".join(f"{name} {share:.1%}" for name, share in refined_shares.items()))
    print(f"{'precision':<9} {'images/s':>9} {'x fp32':>7} {'img/CPU-s':>9} {'x fp32':>7} {'made in s':>9}  target")
    for name in engines:
        ratio, cpu_ratio = median[name] / median["fp32"], cpu[name] / cpu["fp32"]
        kind = "int8" if name == "int8" else "bf16"
        target = "baseline" if name == "fp32" else "(the bfloat16 pass alone)" if name == "bf16-bare" else (
            "n/a (sizes too small)" if args.quick else
            f"{'PASS' if ratio >= TARGETS[kind][0] else 'FAIL'} (>= {TARGETS[kind][0]} x fp32)")
        print(f"{name:<9} {median[name]:>9.1f} {ratio:>7.2f} {cpu[name]:>9.1f} {cpu_ratio:>7.2f} "
              f"{engines[name][1]:>9.1f}  {target}")
    if args.profile:
        int8_profile(engines["int8"][0], images[: args.batch_size])
    print("raw times (s): " + "; ".join(
        f"{name} n={n}: " + ",".join(f"{t:.2f}" for t in times[(name, n)]) for name in engines for n in args.sizes))


def int8_profile(engine, batch, repeats=5, shown=10):
    """The int8 engine's quantized model, compiled again with OpenVINO's per-layer counters: the layers that take most
    of a batch's time, each as a share of the whole (the shares, unlike the times, hold on a busy machine)."""
    import collections

    import openvino

    core = openvino.Core()
    model = core.read_model(os.path.join(engine.provenance()["cache"], "model.xml"))
    request = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32", "PERF_COUNT": "YES"}) \
        .create_infer_request()  # fmt: skip
    request.infer([batch])  # warm-up
    seconds, kinds = collections.Counter(), {}
    for _ in range(repeats):
        request.infer([batch])
        for layer in request.profiling_info:
            seconds[layer.node_name] += layer.real_time.total_seconds()
            kinds[layer.node_name] = f"{layer.node_type} ({layer.exec_type})"
    total = sum(seconds.values())
    print(f"int8, batch of {len(batch)}: {total / repeats * 1e3:.1f} ms of layer time; the {shown} longest layers:")
    for name, value in seconds.most_common(shown):
        print(f"  {value / total:6.1%}  {kinds[name]:<48} {name[:60]}")


def simulated_set(args, settings_path):
    """Fresh galaxies of the demo's survey, preprocessed as the model was trained: (images, preset name)."""
    from gamornet.demo.run import demo_survey
    from gamornet.science.preprocess import preprocess_images
    from gamornet.training.simulate import simulate_galaxies

    with open(settings_path, encoding="utf-8") as stream:
        settings = json.load(stream)
    size = settings["input_shape"][0]
    survey = demo_survey(settings["preset"], size, args.magnitude_range)
    images, _ = simulate_galaxies(args.galaxies, survey, seed=args.seed, progress=False)
    return preprocess_images(images, **settings["preprocess_images"]).astype(np.float32), settings["preset"]


def agreement(args, workdir):
    """Print the class changes of bf16 and int8 against fp32 on a trained network; return bf16's refined share."""
    from gamornet.science.classify import HANDBOOK_THRESHOLDS, MOST_PROBABLE, classify
    from gamornet.keras_module import gamornet_build_model_keras, gamornet_load_model_keras
    from gamornet.inference.bf16 import Refinement

    settings_path = args.preprocessing or os.path.join(os.path.dirname(os.path.abspath(args.model)),
                                                       "preprocessing.json")
    start = time.perf_counter()
    images, preset = simulated_set(args, settings_path)
    thresholds = args.thresholds or f"keras_{preset}"
    print(f"\nAgreement with fp32 on the trained network {args.model}: {len(images)} simulated {preset}-like "
          f"galaxies of {args.magnitude_range[0]}-{args.magnitude_range[1]} mag (seed {args.seed}), "
          f"classes by the handbook set {thresholds!r}; simulated in {time.perf_counter() - start:.0f} s")
    network = gamornet_build_model_keras(images.shape[1:])
    gamornet_load_model_keras(network, args.model)
    bf16_rules = {"bf16": Refinement((thresholds,)), "bf16-all-rules": Refinement()}
    engines = engines_for(network, images, os.path.join(workdir, "trained"), bf16_rules)
    with quiet_stderr():
        predictions = {name: run_engine(engine, images, 256) for name, (engine, _) in engines.items()}
    reference = classify(predictions["fp32"], thresholds)
    counts = ", ".join(f"{name} {int((reference == name).sum())}" for name in ("disk", "indeterminate", "bulge"))
    print(f"fp32 classes: {counts}")
    shares = {name: engines[name][0].counts["refined"] / engines[name][0].counts["predicted"] for name in bf16_rules}
    print(f"{'precision':<20} {'class changes':>13} {'share':>7} {'largest |dp|':>12} {'mean |dp|':>9} "
          f"{'refined':>7}  target")
    for name in tuple(bf16_rules) + ("int8",):
        kind = "int8" if name == "int8" else "bf16"
        changes = int((classify(predictions[name], thresholds) != reference).sum())
        difference = np.abs(predictions[name] - predictions["fp32"])
        share = changes / len(images)
        verdict = "PASS" if share <= TARGETS[kind][1] else "FAIL"
        refined = f"{shares[name]:.1%}" if name in shares else "-"
        print(f"{name:<20} {changes:>13d} {share:>7.3%} {difference.max():>12.4f} {difference.mean():>9.2e} "
              f"{refined:>7}  {verdict} (<= {TARGETS[kind][1]:.1%})")
    rules = (MOST_PROBABLE,) + tuple(HANDBOOK_THRESHOLDS)
    print("class changes under every rule (" + ", ".join(rules) + "):")
    for name in tuple(bf16_rules) + ("int8",):
        changes = [int((predictions[name].argmax(axis=1) != predictions["fp32"].argmax(axis=1)).sum())] + [
            int((classify(predictions[name], rule) != classify(predictions["fp32"], rule)).sum())
            for rule in HANDBOOK_THRESHOLDS]
        print(f"  {name:<20} " + " ".join(f"{count:>5d}" for count in changes))
    if len(images) >= args.sizes[1]:
        timed = {name: engines[name] for name in ("fp32",) + tuple(bf16_rules)}
        median, cpu, _ = time_engines(args, timed, images)
        print(f"speed on these galaxies (marginal rate, {args.sizes[0]} to {args.sizes[1]} images, median of "
              f"{args.repeats}): " + ", ".join(
                  f"{name} {median[name]:.1f} images/s ({median[name] / median['fp32']:.2f} x fp32; "
                  f"{cpu[name] / cpu['fp32']:.2f} x per CPU-second)" for name in timed))  # fmt: skip
    return shares


def main(argv=None):
    args = parse_arguments(argv)
    import tensorflow as tf

    from gamornet.inference.hardware import hardware_support

    support = hardware_support()
    print("GaMorNet precisions: speed against fp32, and agreement with fp32")
    print(f"  Python {platform.python_version()}, TensorFlow {tf.__version__}, {os.cpu_count()} CPUs "
          f"({platform.processor() or platform.machine()}), CPU flags {', '.join(support.cpu_flags) or 'none'}; "
          f"oneDNN {os.environ.get('TF_ENABLE_ONEDNN_OPTS', 'default (on)')}")
    print(f"  batch size {args.batch_size}, marginal rate between {args.sizes[0]} and {args.sizes[1]} images, "
          f"median of {args.repeats} repeat(s); load average at start {' '.join(load_average())}")
    with tempfile.TemporaryDirectory(prefix="gamornet-precision-") as workdir:
        refined_shares = dict(DEMO_REFINED_SHARES)
        if args.model:
            refined_shares = agreement(args, workdir)
        else:
            print("\n(no --model: the agreement part needs a trained network, e.g. make demo's "
                  "demo_output/trained_model.hdf5)")
        if args.refined_share is not None:
            refined_shares = {"bf16": args.refined_share}
        for shape_name in args.shapes.split(","):
            if shape_name:
                speed(args, shape_name, workdir, refined_shares)
    print(f"\nload average at end {' '.join(load_average())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
