"""``gamornet simulate`` and ``gamornet demo``: simulated galaxies, and the train-and-evaluate demo.

TensorFlow and GalSim are imported inside the handlers, so ``gamornet --help``
stays fast.
"""

import os

import numpy as np

from gamornet._atomic import atomic_path
from gamornet.demo import DEMO_DEFAULTS
from gamornet.preprocess import SCALINGS, STRETCHES


def _positive_int(text):
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _non_negative_int(text):
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _positive_float(text):
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not np.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return value


def add_parser(subparsers):
    """Add the ``simulate`` and ``demo`` subcommands."""
    simulate = subparsers.add_parser(
        "simulate",
        help="simulate bulge+disk galaxies (FITS cutouts and a sim_para.txt table); needs gamornet[sim]",
        description=(
            "Simulate galaxies as a bulge (Sersic n=4) plus an exponential disk, convolved with the survey's PSF, "
            "with sky and Poisson noise (GalSim). Writes <output-dir>/output_img_<i>.fits and sim_para.txt, and "
            "with --npy also images.npy (n, y, x, 1) and labels.npy (one-hot disk/indeterminate/bulge, the rule of "
            "Ghosh et al. 2020). Needs GalSim: pip install 'gamornet[sim]'."
        ),
    )
    simulate.add_argument("n_galaxies", type=_positive_int, help="number of galaxies")
    simulate.add_argument("--output-dir", required=True, help="folder for the files (created if missing)")
    simulate.add_argument("--preset", choices=("SDSS", "CANDELS"), default="CANDELS",
                          help="survey imitated: SDSS (g band, 167x167 pixels of 0.396\") or CANDELS "
                               "(HST F160W, 83x83 pixels of 0.06\"); default CANDELS")  # fmt: skip
    simulate.add_argument("--size", type=_positive_int, default=None,
                          help="cutout size in pixels (square), replacing the preset's")  # fmt: skip
    simulate.add_argument("--seed", type=_non_negative_int, default=0, help="master random seed (default 0)")
    simulate.add_argument("--workers", type=_positive_int, default=None, help="worker processes (default: all cores)")
    simulate.add_argument("--keep-sky", action="store_true", help="leave the sky level in the images (default: subtracted)")
    simulate.add_argument("--npy", action="store_true", help="also write images.npy and labels.npy")
    simulate.add_argument("--no-fits", action="store_true", help="do not write the FITS cutouts (only the table, and --npy)")
    simulate.add_argument("--quiet", action="store_true", help="no progress bars")
    simulate.set_defaults(command_name="simulate", handler=run_simulate)

    demo = subparsers.add_parser(
        "demo",
        help="simulate galaxies, train GaMorNet from scratch (Keras) and evaluate it: what `make demo` runs",
        description=(
            "Simulate training, validation and test sets, train GaMorNet from scratch with the Keras backend, "
            "predict the test set and print the handbook-style table of actual against predicted classes. Writes "
            "trained_model.hdf5, metrics.csv, predictions.csv, preprocessing.json and demo.png. The defaults "
            "finish within about 15 minutes on a 2-core CPU. Needs gamornet[sim]."
        ),
    )
    demo.add_argument("--output-dir", default="demo_output", help="folder for the outputs (default demo_output)")
    demo.add_argument("--preset", choices=("SDSS", "CANDELS"), default=DEMO_DEFAULTS["preset"],
                      help=f"survey imitated (default {DEMO_DEFAULTS['preset']})")  # fmt: skip
    demo.add_argument("--size", type=_positive_int, default=DEMO_DEFAULTS["size"],
                      help=f"cutout size in pixels, square (default {DEMO_DEFAULTS['size']})")  # fmt: skip
    for option, key, helptext in (
        ("--n-train", "n_train", "training galaxies"),
        ("--n-validation", "n_validation", "validation galaxies"),
        ("--n-test", "n_test", "test galaxies"),
        ("--epochs", "epochs", "training epochs"),
        ("--batch-size", "batch_size", "images per gradient step"),
    ):
        demo.add_argument(option, type=_positive_int, default=DEMO_DEFAULTS[key],
                          help=f"{helptext} (default {DEMO_DEFAULTS[key]})")  # fmt: skip
    demo.add_argument("--lr", type=_positive_float, default=DEMO_DEFAULTS["lr"],
                      help=f"SGD learning rate (default {DEMO_DEFAULTS['lr']})")  # fmt: skip
    demo.add_argument("--lr-schedule", choices=("cosine", "constant"), default=DEMO_DEFAULTS["lr_schedule"],
                      help="cosine: warm up over half an epoch, then a half cosine down to 0; constant: lr throughout "
                           f"(default {DEMO_DEFAULTS['lr_schedule']})")  # fmt: skip
    demo.add_argument("--magnitude-range", type=float, nargs=2, metavar=("BRIGHT", "FAINT"), default=None,
                      help="total magnitudes (AB) of the simulated galaxies (default: the preset's)")  # fmt: skip
    demo.add_argument("--exclude-indeterminate", action=_BooleanFlag, default=DEMO_DEFAULTS["exclude_indeterminate"],
                      help="leave galaxies with 0.45 <= L_B/L_T <= 0.55 out of training and validation (the test set "
                           f"keeps them; default {DEMO_DEFAULTS['exclude_indeterminate']})")  # fmt: skip
    demo.add_argument("--momentum", type=float, default=DEMO_DEFAULTS["momentum"],
                      help=f"SGD momentum (default {DEMO_DEFAULTS['momentum']})")  # fmt: skip
    demo.add_argument("--nesterov", action=_BooleanFlag, default=DEMO_DEFAULTS["nesterov"],
                      help=f"Nesterov momentum, --no-nesterov to turn off (default {DEMO_DEFAULTS['nesterov']})")  # fmt: skip
    demo.add_argument("--stretch", choices=STRETCHES, default=DEMO_DEFAULTS["stretch"],
                      help=f"image stretch before scaling (default {DEMO_DEFAULTS['stretch']})")  # fmt: skip
    demo.add_argument("--scaling", choices=SCALINGS, default=DEMO_DEFAULTS["scaling"],
                      help=f"per-image scaling (default {DEMO_DEFAULTS['scaling']})")  # fmt: skip
    demo.add_argument("--softening", type=_positive_float, default=DEMO_DEFAULTS["softening"],
                      help=f"stretch softening, in units of the background noise (default {DEMO_DEFAULTS['softening']})")  # fmt: skip
    demo.add_argument("--seed", type=_non_negative_int, default=DEMO_DEFAULTS["seed"],
                      help=f"master seed of the simulated sets (default {DEMO_DEFAULTS['seed']})")  # fmt: skip
    demo.add_argument("--thresholds", default=None,
                      help="turn probabilities into classes with a handbook threshold set (keras_SDSS, keras_CANDELS, "
                           "tflearn_SDSS, tflearn_CANDELS); default: the most probable class")  # fmt: skip
    demo.add_argument("--workers", type=_positive_int, default=None, help="simulation worker processes (default: all cores)")
    demo.add_argument("--no-plot", action="store_true", help="do not write demo.png")
    demo.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    demo.set_defaults(command_name="demo", handler=run_demo_command)


class _BooleanFlag:
    """``--flag`` / ``--no-flag`` (argparse.BooleanOptionalAction, created lazily to keep imports light)."""

    def __new__(cls, *args, **kwargs):
        import argparse

        return argparse.BooleanOptionalAction(*args, **kwargs)


def run_simulate(args):
    """Handler of ``gamornet simulate``."""
    from gamornet.presets import labels_from_bulge_to_total
    from gamornet.simulate import get_preset, simulate_galaxies, write_fits_cutouts, write_parameter_table

    preset = get_preset(args.preset, None if args.size is None else (args.size, args.size))
    os.makedirs(args.output_dir, exist_ok=True)
    images, parameters = simulate_galaxies(
        args.n_galaxies, preset, seed=args.seed, n_workers=args.workers, progress=not args.quiet,
        subtract_sky=not args.keep_sky,
    )  # fmt: skip
    written = []
    if args.no_fits:
        path = os.path.join(args.output_dir, "sim_para.txt")
        write_parameter_table(parameters, path, preset)
        written.append(path)
    else:
        paths = write_fits_cutouts(
            images, parameters, args.output_dir, preset, subtract_sky=not args.keep_sky, progress=not args.quiet
        )
        written += [f"{len(paths)} FITS files output_img_<i>.fits", os.path.join(args.output_dir, "sim_para.txt")]
    if args.npy:
        for name, array in (("images.npy", images), ("labels.npy", labels_from_bulge_to_total(parameters["bulge_to_total"]))):
            path = os.path.join(args.output_dir, name)
            with atomic_path(path, suffix=".npy") as temporary:
                np.save(temporary, array)
            written.append(path)
    shares = np.bincount(parameters["label"], minlength=3) / len(parameters)
    print(
        f"Simulated {args.n_galaxies} {preset.name}-like galaxies ({preset.shape[0]}x{preset.shape[1]} pixels of "
        f"{preset.pixel_scale} arcsec): {shares[0]:.0%} disk, {shares[1]:.0%} indeterminate, {shares[2]:.0%} bulge."
    )
    print("Wrote " + "; ".join(written))
    return 0


def run_demo_command(args):
    """Handler of ``gamornet demo``."""
    from gamornet.demo import run_demo

    run_demo(
        output_dir=args.output_dir, preset=args.preset, size=args.size, n_train=args.n_train,
        n_validation=args.n_validation, n_test=args.n_test, epochs=args.epochs, batch_size=args.batch_size,
        lr=args.lr, lr_schedule=args.lr_schedule, momentum=args.momentum, nesterov=args.nesterov,
        stretch=args.stretch, scaling=args.scaling, softening=args.softening, seed=args.seed,
        magnitude_range=args.magnitude_range, exclude_indeterminate=args.exclude_indeterminate,
        thresholds=args.thresholds, n_workers=args.workers,
        progress=not args.quiet, plot=not args.no_plot,
    )  # fmt: skip
    return 0
