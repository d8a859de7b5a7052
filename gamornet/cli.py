"""The ``gamornet`` command line.

Each subcommand lives in a module ``gamornet._cli_<name>`` that defines
``add_parser(subparsers)``; the parser it adds sets ``command_name`` and
``handler``, a function of
the parsed arguments that returns an exit status. Subcommand modules import
TensorFlow only inside their handlers, so ``gamornet --help`` stays fast.
"""

import argparse
import importlib
import sys

import gamornet

#: Subcommand modules, in the order ``--help`` lists them.
_SUBCOMMAND_MODULES = (
    "gamornet._cli_predict",
    "gamornet._cli_models",
    "gamornet._cli_simulate",
    "gamornet._cli_calibrate",
)


def build_parser():
    """Return the argument parser of the ``gamornet`` command."""
    parser = argparse.ArgumentParser(
        prog="gamornet",
        description=(
            "GaMorNet: classify galaxy images as disk-dominated, indeterminate or bulge-dominated "
            "(Ghosh et al. 2020, ApJ 895, 112)."
        ),
    )
    parser.add_argument("--version", action="version", version=f"gamornet {gamornet.__version__}")
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for module_name in _SUBCOMMAND_MODULES:
        importlib.import_module(module_name).add_parser(subparsers)
    return parser


def main(argv=None):
    """Run the ``gamornet`` command with ``argv`` (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit status: 0 on success, 1 when the work failed on bad input or
        files, 2 for a wrong command line.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    try:
        return int(handler(args) or 0)
    except (ValueError, TypeError, OSError) as error:
        print(f"gamornet {args.command_name}: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
