"""Prediction throughput from survey tiles, against the same stamps stored in a ``.npy`` file.

In one run, on the same galaxies, the same model file and the same machine, it
measures the images/s of

(t) ``gamornet predict --catalog cat.fits --images 'tiles/*.fits'``: stamps cut
    at each row's RA/Dec from SDSS-like tiles (2048 x 1489 pixels of 0.396
    arcsec, overlapping, a TAN WCS each), inside the prediction stream;
(n) ``gamornet predict stamps.npy``: the very same stamps, cut beforehand and
    stored in a ``.npy`` file (the baseline);
(r) the cutout reader alone (``gamornet.survey.cutouts.CutoutReader``, no network),
    to show what cutting costs.

(t) and (n) run ``gamornet.cli.main.main`` in this process. Throughput is the
marginal rate between two catalogue sizes (512 and 2,048 rows by default),
(n2 - n1) / (time(n2) - time(n1)), so fixed costs (loading the model, indexing
the tiles, tracing) cancel; they are reported as the intercept. Sizes and
methods are interleaved over the repeats, and the target is judged on the
median times, as in ``benchmarks/predict_throughput.py``.

Target (issue 14): (t) >= 0.9 x (n) at the SDSS shape.

Usage::

    python benchmarks/cutout_throughput.py            # the full benchmark, ~10 min on 2 busy cores
    python benchmarks/cutout_throughput.py --quick    # tiny sizes, a smoke run
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

import numpy as np

import gamornet.models.network  # noqa: F401  (TensorFlow imported quietly, then Keras: no start-up lines)

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)

from predict_throughput import load_average, make_model_files, quiet_stderr, rates  # noqa: E402

METHODS = {
    "t": "(t) gamornet predict --catalog --images",
    "n": "(n) gamornet predict stamps.npy",
    "r": "(r) cutout reader alone (no network)",
}

TILE_SHAPE = (1489, 2048)  # rows, columns of an SDSS frame
PIXEL_SCALE = 0.396


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes (8 and 24 rows), one repeat: a smoke run")
    parser.add_argument("--sizes", default=None, help="the two catalogue sizes of the marginal rate (default: 512,2048)")
    parser.add_argument("--repeats", type=int, default=None, help="repeats of every timing (default: 3)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--tiles", type=int, default=4, help="number of tiles, in a row, overlapping (default: 4)")
    args = parser.parse_args(argv)
    text = args.sizes or ("8,24" if args.quick else "512,2048")
    args.sizes = tuple(int(value) for value in text.split(","))
    if len(args.sizes) != 2 or not 0 < args.sizes[0] < args.sizes[1]:
        raise SystemExit(f"--sizes must be two increasing sizes, such as 512,2048. Received: {text!r}")
    args.repeats = args.repeats or (1 if args.quick else 3)
    return args


def make_tiles(folder, n_tiles, rng):
    """SDSS-like tiles in a row along RA, each overlapping the next by a fifth, with sky noise."""
    from astropy.io import fits
    from astropy.wcs import WCS

    paths, wcs_list = [], []
    step = TILE_SHAPE[1] * 0.8 * PIXEL_SCALE / 3600.0
    for index in range(n_tiles):
        wcs = WCS(naxis=2)
        wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
        wcs.wcs.crval = [180.0 + index * step, 10.0]
        wcs.wcs.crpix = [TILE_SHAPE[1] / 2 + 0.5, TILE_SHAPE[0] / 2 + 0.5]
        wcs.wcs.cd = np.diag([-PIXEL_SCALE, PIXEL_SCALE]) / 3600.0
        header = wcs.to_header()
        header["BUNIT"], header["FILTER"] = "nanomaggy", "g"
        path = os.path.join(folder, f"frame-{index}.fits")
        fits.PrimaryHDU(rng.normal(0.0, 0.02, TILE_SHAPE).astype(np.float32), header).writeto(path)
        paths.append(path)
        wcs_list.append(wcs)
    return paths, wcs_list


def make_catalogue(n_rows, wcs_list, rng):
    """RA/Dec of ``n_rows`` positions in random tiles, far enough from the edges for whole SDSS stamps."""
    from astropy.table import Table

    tiles = rng.integers(0, len(wcs_list), n_rows)
    margin = 90
    x = rng.uniform(margin, TILE_SHAPE[1] - margin, n_rows)
    y = rng.uniform(margin, TILE_SHAPE[0] - margin, n_rows)
    ra, dec = np.empty(n_rows), np.empty(n_rows)
    for index, wcs in enumerate(wcs_list):
        chosen = tiles == index
        ra[chosen], dec[chosen] = wcs.all_pix2world(x[chosen], y[chosen], 0)
    return Table({"objid": np.arange(1, n_rows + 1), "ra": ra, "dec": dec})


def main(argv=None):
    args = parse_arguments(argv)
    n1, n2 = args.sizes
    import tensorflow as tf

    from gamornet.cli import main as cli
    from gamornet.survey.cutouts import CutoutReader

    print("GaMorNet prediction throughput from survey tiles")
    print(f"  SDSS shape (167, 167, 1), {args.tiles} tiles of {TILE_SHAPE[1]} x {TILE_SHAPE[0]} pixels, batch size "
          f"{args.batch_size}, marginal rate between {n1} and {n2} rows, {args.repeats} repeat(s)")
    print(f"  TensorFlow {tf.__version__}, {os.cpu_count()} CPUs, load average at start {' '.join(load_average())}")
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="gamornet-cutout-benchmark-") as workdir:
        with quiet_stderr():
            keras_path, _ = make_model_files(workdir, (167, 167, 1), with_tflearn=False)
        tiles, wcs_list = make_tiles(workdir, args.tiles, rng)
        catalogue = make_catalogue(n2, wcs_list, rng)
        catalogues, npy_files = {}, {}
        for n in args.sizes:
            catalogues[n] = os.path.join(workdir, f"catalogue_{n}.fits")
            catalogue[:n].write(catalogues[n])
            stamps = np.concatenate([batch.images for batch in CutoutReader(catalogues[n], tiles, "SDSS")])
            assert len(stamps) == n
            npy_files[n] = os.path.join(workdir, f"stamps_{n}.npy")
            np.save(npy_files[n], stamps)
        output = os.path.join(workdir, "predictions.csv")
        common = ["--model", keras_path, "--input-shape", "SDSS", "--batch-size", str(args.batch_size),
                  "--no-progress", "--output", output]

        def run(arguments):
            status = cli.main(["predict", *arguments, *common])
            if status != 0:
                raise RuntimeError(f"gamornet predict {' '.join(arguments)} failed with status {status}")

        functions = {
            "t": lambda n: run(["--catalog", catalogues[n], "--images", os.path.join(workdir, "frame-*.fits")]),
            "n": lambda n: run([npy_files[n]]),
            "r": lambda n: sum(len(batch.sources) for batch in CutoutReader(catalogues[n], tiles, "SDSS",
                                                                            batch_size=args.batch_size)),
        }
        times = time_methods(functions, args.sizes, args.repeats)
    report(times, args)
    print(f"load average at end {' '.join(load_average())}")
    return 0


def time_methods(functions, sizes, repeats):
    """Wall seconds of every method and size, interleaved (the order rotates, sizes alternate)."""
    times = {(key, n): [] for key in functions for n in sizes}
    keys = list(functions)
    for repeat in range(repeats):
        order = keys[repeat % len(keys):] + keys[: repeat % len(keys)]
        for n in sizes if repeat % 2 == 0 else sizes[::-1]:
            for key in order:
                with quiet_stderr():
                    start = time.perf_counter()
                    functions[key](n)
                    times[(key, n)].append(time.perf_counter() - start)
    return times


def report(times, args):
    median = {key: rates(times, key, args.sizes, statistics.median) for key in METHODS}
    best = {key: rates(times, key, args.sizes, min) for key in METHODS}
    baseline, baseline_best = median["n"][0], best["n"][0]
    print()
    print(f"{'method':<42} {'images/s':>9} {'x (n)':>7} {'fixed s':>8} | {'best':>7} {'x (n)':>7}")
    for key, label in METHODS.items():
        rate, fixed = median[key]
        print(f"{label:<42} {rate:>9.1f} {rate / baseline:>7.3f} {fixed:>8.2f} | {best[key][0]:>7.1f} "
              f"{best[key][0] / baseline_best:>7.3f}")
    ratio = median["t"][0] / baseline
    if args.quick or ratio != ratio:
        verdict = "n/a (sizes too small for a marginal rate)"
    else:
        verdict = ("PASS" if ratio >= 0.9 else "FAIL") + " (>= 0.9)"
    print(f"target: (t) / (n) = {ratio:.3f} on the median times: {verdict}")
    print("images/s: marginal wall-clock rate from the median times; fixed s: the intercept (model loading, tile "
          "index, start-up); best: the same from the best-of-repeats times")
    print("raw times (s), per size, in run order:")
    for key in METHODS:
        print(f"  {key}: " + "; ".join(f"n={n}: " + ", ".join(f"{t:.2f}" for t in times[(key, n)])
                                       for n in args.sizes))


if __name__ == "__main__":
    sys.exit(main())
