"""The options of ``gamornet predict`` that run it on a Dask cluster (see :mod:`gamornet.survey.distributed`).

:mod:`gamornet.cli.predict` adds them to its parser and hands the run over
here when ``--workers`` or ``--scheduler`` is given. Dask is imported only
then: without these options, ``gamornet predict`` never imports it.
"""

import sys

from gamornet._utils import checks as _checks

_GROUP_DESCRIPTION = """\
With --workers or --scheduler, the images are cut into partitions of
--partition-size images, classified in parallel by Dask workers (each builds
the model once), and written as one Parquet file each into the --output folder
(a name ending in .parquet or /), with the provenance of the run in the file
metadata. A .csv or .fits --output is written from the parts at the end. The
same command run again (after Ctrl-C, a crash or a time limit) does only the
partitions that are missing; another model, other settings or other inputs on
that folder are refused, and so are input files rewritten since their
partition was classified (--redo-changed classifies those partitions again).
One run at a time uses a folder: a second one is refused while the first
holds the folder's lock (_lock.json). Needs the 'distributed' extra:
pip install 'gamornet[distributed]'. Examples:
  gamornet predict cutouts/ --model SDSS_tl --output sdss.parquet --workers 2
  gamornet predict 'tiles/*.npy' --model CANDELS_tl --output run.parquet/ --scheduler tcp://10.0.0.5:8786
"""


def add_options(parser):
    """Add --workers, --scheduler and --partition-size to the parser of ``gamornet predict``."""
    group = parser.add_argument_group("running on a Dask cluster", _GROUP_DESCRIPTION)
    where = group.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, metavar="N",
                       help="start a Dask cluster of N worker processes on this machine (127.0.0.1), stopped at the "
                            "end; the cores are shared out between them")
    where.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                       help="run on an existing Dask cluster (dask-jobqueue on Slurm, a science platform ...)")
    group.add_argument("--partition-size", type=int, metavar="N",
                       help="images per task and per Parquet file (default: 4096)")
    group.add_argument("--redo-changed", action="store_true",
                       help="on a folder that holds part of a run: classify again the finished partitions whose "
                            "input files changed since (another size or modification time), instead of refusing")


def wanted(args):
    """Whether the command line asks for a Dask cluster."""
    return args.workers is not None or args.scheduler is not None


def _is_parquet_output(output):
    return output is not None and (output.endswith(("/", "\\")) or output.rstrip("/").lower().endswith(".parquet"))


def refuse_without_cluster(args):
    """Refuse the options that need a cluster when neither --workers nor --scheduler is given."""
    if args.redo_changed:
        raise ValueError("--redo-changed is used with --workers N or --scheduler tcp://HOST:PORT, on the output "
                         "folder of a run on a Dask cluster")
    if args.partition_size is not None:
        raise ValueError("--partition-size is used with --workers N or --scheduler tcp://HOST:PORT, which run "
                         "gamornet predict on a Dask cluster")
    if _is_parquet_output(args.output):
        raise ValueError(
            f"--output {args.output!r} is a Parquet folder, which gamornet predict writes on a Dask cluster: add "
            "--workers N (a cluster of N processes on this machine) or --scheduler tcp://HOST:PORT, or give a .csv "
            "or .fits table"
        )


def _client(args):
    if args.workers is not None:
        if args.workers < 1:
            raise ValueError(f"--workers must be a positive number of worker processes. Received: {args.workers}")
        return args.workers
    return args.scheduler


def _refuse_catalogues(args):
    if getattr(args, "catalog", None) is not None or getattr(args, "images", None) is not None:
        raise ValueError(
            "--catalog and --images (stamps cut from survey images) run in one process for now: leave out --workers "
            "and --scheduler, or cut the stamps first (gamornet cutouts) and classify them on the cluster"
        )
    if not args.inputs:
        raise ValueError("give the images to classify (FITS files, folders, glob patterns, .npy files or ranges such "
                         "as 'stack.npy[0:4096]')")


def run(args):
    """Run ``gamornet predict`` on a Dask cluster; return the exit status."""
    from gamornet.cli._options import predictor_options, resolve_model, resolve_thresholds
    from gamornet.survey import distributed

    if args.output is None:
        raise ValueError("--output is needed with --workers or --scheduler: a Parquet folder (such as run.parquet/), "
                         "or a .csv or .fits table")
    _refuse_catalogues(args)
    resolved = resolve_model(args)
    thresholds = resolve_thresholds(args, resolved)
    partition_size = args.partition_size or distributed.DEFAULT_PARTITION_SIZE
    if args.partition_size is not None and args.partition_size < 1:
        raise ValueError(f"--partition-size must be a positive number of images. Received: {args.partition_size}")
    _checks.check_hdu(args.hdu, "--hdu")
    batch_size = _checks.check_positive_int(args.batch_size, "--batch-size")
    if not resolved.published and args.backend == "keras" and resolved.folder is None:
        _checks.check_model_file(args.model, "--model")
    options = predictor_options(args, resolved.input_shape)
    settings = distributed.run_settings(args.model, resolved.input_shape, args.backend, thresholds, partition_size,
                                        args.hdu, args.skip_bad, options)
    command_line = getattr(args, "command_line", None) or ["gamornet", *sys.argv[1:]]
    summary = distributed.run_partitions(args.inputs, args.output, settings, _client(args), batch_size,
                                         not args.no_progress, command_line, redo_changed=args.redo_changed)
    print("gamornet predict: applies " + settings.describe_applied(), file=sys.stderr)
    _report(summary, settings)
    return 0


def _report(summary, settings):
    from gamornet.inference.pipeline import Outcome, report_lines

    outcome = Outcome()
    outcome.bad_inputs = list(summary.bad)
    outcome.blank_sources = list(summary.blank)
    lines = report_lines(summary.rows, outcome, summary.output, settings.thresholds)
    print("\n".join(lines), file=sys.stderr)
    earlier = f", {summary.done_before} finished by an earlier run" if summary.done_before else ""
    if summary.redone:
        earlier = f" ({summary.redone} of them again, as their input files had changed){earlier}"
    print(f"gamornet predict: {summary.partitions} partitions: {summary.done_now} classified now{earlier}",
          file=sys.stderr)
