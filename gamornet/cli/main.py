"""The ``gamornet`` command line.

Each subcommand lives in a module ``gamornet._cli_<name>`` that defines
``add_parser(subparsers)``; the parser it adds sets ``command_name`` and
``handler``, a function of
the parsed arguments that returns an exit status. Subcommand modules import
TensorFlow only inside their handlers, so ``gamornet --help`` stays fast.
"""

import argparse
import contextlib
import importlib
import os
import signal
import sys
import threading

from gamornet._version import __version__
from gamornet._utils import tf_logging as _tf_logging
from gamornet.errors import Terminated

#: Subcommand modules, in the order ``--help`` lists them.
_SUBCOMMAND_MODULES = (
    "gamornet.cli.predict",
    "gamornet.cli.models",
    "gamornet.cli.simulate",
    "gamornet.cli.calibrate",
    "gamornet.cli.cutouts",
    "gamornet.cli.train",
)


def build_parser():
    """Return the argument parser of the ``gamornet`` command."""
    parser = argparse.ArgumentParser(
        prog="gamornet",
        description=(
            "GaMorNet: classify galaxy images as disk-dominated, indeterminate or bulge-dominated "
            "(Ghosh et al. 2020, ApJ 895, 112)."
        ),
        epilog=(
            "TensorFlow's own log lines (such as its start-up messages about oneDNN and the CPU) are hidden; "
            f"--verbose, or the environment variable {_tf_logging.ENVIRONMENT_VARIABLE}=1, shows them."
        ),
    )
    parser.add_argument("--version", action="version", version=f"gamornet {__version__}")
    parser.add_argument(
        "--verbose",
        action="store_true",
        help=f"show TensorFlow's own log lines (as {_tf_logging.ENVIRONMENT_VARIABLE}=1 does)",
    )
    subparsers = parser.add_subparsers(title="commands", metavar="COMMAND")
    for module_name in _SUBCOMMAND_MODULES:
        importlib.import_module(module_name).add_parser(subparsers)
    return parser


def _raise_terminated(signum, frame):
    raise Terminated()


@contextlib.contextmanager
def _sigterm_as_interrupt():
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv=None):
    """Run the ``gamornet`` command with ``argv`` (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit status: 0 on success, 1 when the work failed on bad input or
        files, 2 for a wrong command line, 130 when stopped by Ctrl-C and 143
        when stopped by SIGTERM (what was kept is said in one line).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    args.command_line = ["gamornet", *(sys.argv[1:] if argv is None else argv)]
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help()
        return 2
    with _tensorflow_logs_shown(args.verbose):
        try:
            with _sigterm_as_interrupt():
                return int(handler(args) or 0)
        except (ValueError, TypeError, OSError) as error:
            print(f"gamornet {args.command_name}: error: {error}", file=sys.stderr)
            return 1
        except KeyboardInterrupt as stop:
            terminated = isinstance(stop, Terminated)
            kept = getattr(stop, "kept", None) or "nothing was kept"
            print(f"gamornet {args.command_name}: {'stopped by SIGTERM' if terminated else 'interrupted'}; {kept}",
                  file=sys.stderr)
            return 143 if terminated else 130


@contextlib.contextmanager
def _tensorflow_logs_shown(verbose):
    """With ``verbose``, show TensorFlow's log lines during the command, in this process and its children."""
    name = _tf_logging.ENVIRONMENT_VARIABLE
    if not verbose:
        yield
        return
    previous = os.environ.get(name)
    os.environ[name] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = previous


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
