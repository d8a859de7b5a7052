"""Your own model, end to end from the command line, on galaxies of another simulator.

What a new user does for a new survey: simulate its galaxies (here with
``benchmarks/other_simulator.py``: a Moffat PSF, Gaussian sky noise and other
size ranges than ``gamornet.training.simulate``), write them as FITS files with
CSV catalogues, train with the recommended recipe, and classify the test
galaxies' raw FITS files with ``gamornet predict``. It measures

(a) the training's wall time and CPU time (and the machine's load average),
    for ``gamornet train ... --optimizer adam --lr 0.0006 --scaling peak``;
(b) disk and bulge recall (the fraction of the true disks, and bulges, whose
    most probable class is theirs) of the test galaxies with an integrated
    S/N above 20 (target >= 0.90 each), overall, and by magnitude;
(c) that ``gamornet predict`` on the raw FITS files (which applies the model
    folder's preprocessing) gives the same probabilities, to 1e-5, and the
    same classes as the network given images preprocessed by hand
    (``preprocess_images`` then ``gamornet_predict_keras``).

Usage::

    python benchmarks/own_simulator.py                        # 4,000 training, 500 validation, 1,000 test galaxies
    python benchmarks/own_simulator.py --quick                # a smoke run (tiny sizes)
    python benchmarks/own_simulator.py --workdir /tmp/own     # keep the simulated galaxies and the model there
"""

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from other_simulator import simulate_other, write_fits_catalogue  # noqa: E402 - the benchmark beside this one

CLASSES = ("disk", "indeterminate", "bulge")


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n-train", type=int, default=4000)
    parser.add_argument("--n-validation", type=int, default=500)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--lr", type=float, default=0.0006)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workdir", help="keep the galaxies and the model here (default: a temporary folder)")
    parser.add_argument("--quick", action="store_true", help="a smoke run: a few galaxies, one epoch")
    args = parser.parse_args(argv)
    if args.quick:
        args.n_train, args.n_validation, args.n_test, args.epochs = 48, 16, 16, 1
    return args


def _simulated(folder, name, n_galaxies, seed):
    """The catalogue of ``n_galaxies`` galaxies in ``folder/name`` (simulated once, then reused)."""
    path = os.path.join(folder, name, "catalogue.csv")
    if not os.path.isfile(path):
        images, table = simulate_other(n_galaxies, seed=seed)
        write_fits_catalogue(images, table, os.path.join(folder, name))
    return path


def _gamornet(*arguments):
    """Run the gamornet command line; (wall seconds, CPU seconds of the child, its standard error)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    finished = subprocess.run([sys.executable, "-m", "gamornet.cli", *arguments], capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if finished.returncode != 0:
        sys.exit(f"gamornet {arguments[0]} failed ({finished.returncode}):\n{finished.stdout[-3000:]}\n"
                 f"{finished.stderr[-3000:]}")  # fmt: skip
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, finished.stdout + finished.stderr


def _read_catalogue(path):
    with open(path, newline="", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    folder = os.path.dirname(path)
    labels = np.array([CLASSES.index(row["label"]) for row in rows])
    return ([os.path.join(folder, row["path"]) for row in rows], labels,
            np.array([float(row["magnitude"]) for row in rows]), np.array([float(row["snr"]) for row in rows]))


def _recalls(truth, predicted, selected):
    """(disk recall, bulge recall, n disks, n bulges) of the selected galaxies."""
    values = []
    for label in (0, 2):
        members = selected & (truth == label)
        values.append(float(np.mean(predicted[members] == label)) if members.any() else float("nan"))
    return values[0], values[1], int((selected & (truth == 0)).sum()), int((selected & (truth == 2)).sum())


def _line(name, truth, predicted, selected):
    disk, bulge, n_disk, n_bulge = _recalls(truth, predicted, selected)
    return f"  {name:<22} disk recall {disk:.3f} ({n_disk:4d} disks)   bulge recall {bulge:.3f} ({n_bulge:4d} bulges)"


def _predictions(path):
    with open(path, newline="", encoding="utf-8") as stream:
        rows = list(csv.DictReader(stream))
    return {row["source"]: np.array([float(row[name]) for name in ("p_disk", "p_indet", "p_bulge")]) for row in rows}


def _hand_preprocessed(paths, model_folder):
    """The network's probabilities on the test images preprocessed by hand with the folder's settings."""
    from astropy.io import fits

    from gamornet.keras_module import gamornet_predict_keras
    from gamornet.science.preprocess import preprocess_images

    with open(os.path.join(model_folder, "preprocessing.json"), encoding="utf-8") as stream:
        settings = json.load(stream)["preprocess_images"]
    raw = np.stack([fits.getdata(path).astype(np.float32)[:, :, None] for path in paths])
    images = raw if settings is None else preprocess_images(raw, **settings)
    return gamornet_predict_keras(images, os.path.join(model_folder, "trained_model.hdf5"), "CANDELS")


def run(args, workdir):
    started = time.perf_counter()
    train = _simulated(workdir, "train", args.n_train, seed=1)
    validation = _simulated(workdir, "validation", args.n_validation, seed=2)
    test = _simulated(workdir, "test", args.n_test, seed=3)
    simulated = time.perf_counter() - started
    model = os.path.join(workdir, "model")
    command = ["train", "--catalog", train, "--validation-catalog", validation, "--input-shape", "CANDELS",
               "--output-dir", model, "--optimizer", "adam", "--lr", str(args.lr), "--scaling", "peak", "--epochs",
               str(args.epochs), "--batch-size", str(args.batch_size), "--seed", "0", "--quiet", "--fresh"]  # fmt: skip
    # The guard's verdict is reported below rather than allowed to end the benchmark (one step on the smoke run's 48
    # galaxies learns nothing, and it must say so).
    command.append("--keep-going")
    load_before = os.getloadavg()
    wall, cpu, train_output = _gamornet(*command)
    load_after = os.getloadavg()
    paths, truth, magnitude, snr = _read_catalogue(test)
    output = os.path.join(workdir, "predictions.csv")
    predict_wall, _, predict_output = _gamornet("predict", os.path.dirname(test), "--model", model, "--output", output,
                                                "--no-progress", "--thresholds", "0.5,0.5")  # fmt: skip
    by_source = _predictions(output)
    cli = np.stack([by_source[path] for path in paths])
    hand = _hand_preprocessed(paths, model)
    predicted = np.argmax(cli, axis=1)
    with open(os.path.join(model, "model_card.json"), encoding="utf-8") as stream:
        training = json.load(stream).get("training", {})

    print(f"galaxies of benchmarks/other_simulator.py: {args.n_train} training, {args.n_validation} validation, "
          f"{args.n_test} test (simulated in {simulated:.0f} s)")
    print(f"(a) gamornet {' '.join(command)}")
    print(f"    training: {wall:.0f} s wall, {cpu:.0f} s CPU ({cpu / 2:.0f} s on 2 idle cores); load average "
          f"{load_before[0]:.1f} before, {load_after[0]:.1f} after; {training}")
    print("    divergence guard: " + (f"FIRED: {training['diverged']}" if training.get("diverged") else "silent"))
    print(f"(b) recalls (most probable class) of the {args.n_test} test galaxies:")
    print(_line("S/N > 20 (target 0.90)", truth, predicted, snr > 20))
    print(_line("all", truth, predicted, np.ones(len(truth), bool)))
    print(_line("S/N <= 20", truth, predicted, snr <= 20))
    for low, high in ((19, 20), (20, 21), (21, 22), (22, 23), (23, 23.5)):
        print(_line(f"H {low}-{high}", truth, predicted, (magnitude >= low) & (magnitude < high)))
    difference = float(np.max(np.abs(cli - hand)))
    same = int(np.sum(np.argmax(hand, axis=1) == predicted))
    print(f"(c) gamornet predict on raw FITS ({predict_wall:.0f} s) vs the network on hand-preprocessed images: "
          f"largest probability difference {difference:.2e} (target <= 1e-5), same class for {same} of {len(paths)}")
    print("    " + next((line for line in predict_output.splitlines() if "applies" in line), "(no 'applies' line)"))


def main(argv=None):
    args = parse_arguments(argv)
    if args.workdir:
        os.makedirs(args.workdir, exist_ok=True)
        run(args, os.path.abspath(args.workdir))
    else:
        with tempfile.TemporaryDirectory(prefix="gamornet-own-") as workdir:
            run(args, workdir)


if __name__ == "__main__":
    main()
