"""``gamornet simulate`` and ``gamornet demo``: simulated galaxies, and the train-and-evaluate demo.

TensorFlow and GalSim are imported inside the handlers, so ``gamornet --help``
stays fast.
"""

import argparse
import dataclasses
import os
import textwrap

import numpy as np

from gamornet._utils.atomic import atomic_path
from gamornet.cli._types import non_negative_int, positive_float, positive_int
from gamornet.demo.run import DemoConfig


def add_parser(subparsers):
    """Add the ``simulate`` and ``demo`` subcommands."""
    simulate = subparsers.add_parser(
        "simulate",
        help="simulate bulge+disk galaxies (FITS cutouts and a sim_para.txt table); needs gamornet[sim]",
        description=textwrap.fill(
            "Simulate galaxies as a bulge (Sersic n=4) plus an exponential disk, convolved with the survey's PSF, "
            "with sky and Poisson noise (GalSim). Writes <output-dir>/output_img_<i>.fits and sim_para.txt, and "
            "with --npy also images.npy (n, y, x, 1) and labels.npy (one-hot disk/indeterminate/bulge, the rule of "
            "Ghosh et al. 2020). Needs GalSim: pip install 'gamornet[sim]'.",
            width=79,
        ),
        epilog=(
            "examples:\n"
            "  gamornet simulate 1000 --preset CANDELS --output-dir sims/\n"
            "  gamornet simulate 200 --preset SDSS --size 128 --seed 7 --npy --output-dir sdss_sims/\n"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    simulate.add_argument("n_galaxies", type=positive_int, help="number of galaxies")
    simulate.add_argument("--output-dir", required=True, help="folder for the files (created if missing)")
    simulate.add_argument("--preset", choices=("SDSS", "CANDELS"), default="CANDELS",
                          help="survey imitated: SDSS (g band, 167x167 pixels of 0.396 arcsec) or CANDELS "
                               "(HST F160W, 83x83 pixels of 0.06 arcsec); default CANDELS")  # fmt: skip
    simulate.add_argument("--size", type=positive_int, default=None,
                          help="cutout size in pixels (square), replacing the preset's")  # fmt: skip
    simulate.add_argument("--seed", type=non_negative_int, default=0, help="master random seed (default 0)")
    simulate.add_argument("--workers", type=positive_int, default=None, help="worker processes (default: all cores)")
    simulate.add_argument("--keep-sky", action="store_true", help="leave the sky level in the images (default: subtracted)")
    simulate.add_argument("--npy", action="store_true", help="also write images.npy and labels.npy")
    simulate.add_argument("--no-fits", action="store_true", help="do not write the FITS cutouts (only the table, and --npy)")
    simulate.add_argument("--quiet", action="store_true", help="no progress bars")
    simulate.set_defaults(command_name="simulate", handler=run_simulate)

    demo = subparsers.add_parser(
        "demo",
        help="simulate galaxies, train GaMorNet from scratch (Keras) and evaluate it: what `make demo` runs",
        description=textwrap.fill(
            "Simulate training, validation and test sets, train GaMorNet from scratch with the Keras backend, "
            "predict the test set and print the handbook-style table of actual against predicted classes. Writes "
            "trained_model.hdf5, metrics.csv, predictions.csv, preprocessing.json and demo.png. The defaults are "
            "what `make demo` runs, in about 6 minutes on 2 idle CPU cores. Needs gamornet[sim].",
            width=79,
        ),
        epilog=(
            "examples:\n"
            "  gamornet demo --magnitude-range 19 22.5            # what `make demo` runs\n"
            "  gamornet demo --output-dir demo_seed1 --seed 1     # the same with another seed\n"
        ),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument("--output-dir", default="demo_output", help="folder for the outputs (default demo_output)")
    for field in dataclasses.fields(DemoConfig):
        demo.add_argument("--" + field.name.replace("_", "-"), **_demo_option(field))
    demo.add_argument("--workers", type=positive_int, default=None, help="simulation worker processes (default: all cores)")
    demo.add_argument("--no-plot", action="store_true", help="do not write demo.png")
    demo.add_argument("--quiet", action="store_true", help="no progress bars or per-epoch lines")
    demo.set_defaults(command_name="demo", handler=run_demo_command)


#: How each kind of DemoConfig field is read from the command line.
_PARSERS = {
    "positive_int": {"type": positive_int},
    "non_negative_int": {"type": non_negative_int},
    "positive_float": {"type": positive_float},
    "number": {"type": float},
    "text": {},
    "pair": {"type": float, "nargs": 2},
}


def _demo_option(field):
    """The ``add_argument`` keywords of the ``gamornet demo`` option of a DemoConfig field."""
    kind = field.metadata["kind"]
    options = {"dest": field.name, "default": field.default}
    if kind == "flag":
        options["action"] = _BooleanFlag
    elif kind == "choice":
        options["choices"] = field.metadata["choices"]
    else:
        options.update(_PARSERS[kind])
    if "metavar" in field.metadata:
        options["metavar"] = field.metadata["metavar"]
    default = "" if field.default is None else f" (default {field.default})"
    options["help"] = field.metadata["help"] + default
    return options


class _BooleanFlag:
    """``--flag`` / ``--no-flag`` (argparse.BooleanOptionalAction, created lazily to keep imports light)."""

    def __new__(cls, *args, **kwargs):
        import argparse

        return argparse.BooleanOptionalAction(*args, **kwargs)


def run_simulate(args):
    """Handler of ``gamornet simulate``."""
    from gamornet.presets import labels_from_bulge_to_total
    from gamornet.training.simulate import get_preset, simulate_galaxies, write_fits_cutouts, write_parameter_table

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


def _demo_config(args):
    """The DemoConfig of a parsed ``gamornet demo`` command line."""
    return DemoConfig(**{field.name: getattr(args, field.name) for field in dataclasses.fields(DemoConfig)})


def run_demo_command(args):
    """Handler of ``gamornet demo``."""
    from gamornet.demo.run import run_demo

    run_demo(args.output_dir, _demo_config(args), n_workers=args.workers, progress=not args.quiet, plot=not args.no_plot)
    return 0
