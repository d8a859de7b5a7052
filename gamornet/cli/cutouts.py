"""``gamornet cutouts``: stamps cut by RA/Dec from survey images, written as a FITS cube for inspection.

The options that name a catalogue and survey images (``--catalog``,
``--images``, ``--id-column``, ``--ra-column``, ``--dec-column``,
``--pixel-scale``, ``--no-resample``) are defined here once, and ``gamornet
predict`` adds the same ones (:func:`add_survey_arguments`,
:func:`survey_reader`), so that both commands cut the same stamps.
"""

import argparse
import os
import sys

from gamornet._utils import checks as _checks

_DESCRIPTION = """\
Cut a stamp of the network's input size around the RA/Dec of each row of a
catalogue, from survey images (tiles or mosaics with a celestial WCS; tiles may
overlap), and write them as a FITS cube (one plane per catalogue row) with a
table HDU 'ROWS' of the rows and their flags, to look at what `gamornet predict
--catalog ... --images ...` classifies. Images at another pixel scale than the
network's are resampled to it, conserving flux (--no-resample: cut them in
their own pixels). Rows off the images get a plane of NaN; stamps that cross an
image's edge are filled with the stamp's median and flagged 'partial'.

Needs reproject (pip install 'gamornet[survey]').
"""

_EPILOG = """\
flags (columns of the ROWS table, and of `gamornet predict --catalog`):
  off_image         no image covers the stamp (no stamp; empty probabilities)
  partial           the stamp crosses the edge of its image
  fraction_present  fraction of the stamp's pixels inside the image
  nan_fraction      fraction of the stamp's pixels that are NaN or infinite in the image
  tile              the image the stamp was cut from (path[HDU] for one CCD of a multi-extension file)
  bad_coordinates   the row's RA/Dec are missing or out of range (kept with --skip-bad; no stamp)

rows are counted from 1 in messages (the first row after the header is row 1).

examples:
  gamornet cutouts --catalog galaxies.fits --images 'tiles/*.fits' --output stamps.fits
  gamornet cutouts --catalog cat.csv --ra-column RA_deg --dec-column DEC_deg --images mosaic.fits \\
      --input-shape CANDELS --output stamps.fits
"""


def add_survey_arguments(parser, required):
    """Add the options that name a catalogue and survey images to ``parser``.

    ``required``: whether ``--catalog`` and ``--images`` must be given (``gamornet predict`` also takes files of
    cutouts instead).
    """
    group = parser.add_argument_group("survey images (cutouts by RA/Dec)")
    group.add_argument("--catalog", required=required, metavar="TABLE",
                       help="catalogue of galaxies: a FITS, CSV, ECSV or Parquet table with RA/Dec in degrees")
    group.add_argument("--images", nargs="+", required=required, metavar="IMAGE",
                       help="survey images of one band: FITS files, folders or glob patterns (quote them)")
    group.add_argument("--id-column", metavar="NAME",
                       help="the catalogue's id column (default: the first of id, ID, objid in any case; else the row "
                            "number)")
    group.add_argument("--ra-column", metavar="NAME", help="the RA column (default: ra, RA, RAJ2000, ALPHA_J2000, ...)")
    group.add_argument("--dec-column", metavar="NAME",
                       help="the Dec column (default: dec, DEC, DEJ2000, DELTA_J2000, ...)")
    group.add_argument("--pixel-scale", type=float, metavar="ARCSEC",
                       help="the network's pixel scale in arcsec/pixel (default: 0.396 for SDSS, 0.06 for CANDELS; "
                            "needed for other input shapes unless --no-resample)")
    group.add_argument("--no-resample", action="store_true",
                       help="cut stamps in the images' own pixels, even where their scale differs from the network's "
                            "(a warning says by how much)")
    return group


def survey_reader(args, input_shape, batch_size, exclude=()):
    """The :class:`gamornet.survey.cutouts.CutoutReader` of the survey options in ``args`` (images matching a file of
    ``exclude`` left out)."""
    from gamornet.survey.cutouts import CutoutReader

    hdu = _checks.check_hdu(args.hdu, "--hdu")
    reader = CutoutReader(args.catalog, args.images, input_shape, batch_size=batch_size, pixel_scale=args.pixel_scale,
                          resample=not args.no_resample, hdu=hdu, skip_bad=args.skip_bad, id_column=args.id_column,
                          ra_column=args.ra_column, dec_column=args.dec_column, exclude=exclude)
    if reader.total == 0:
        raise ValueError(f"the catalogue {args.catalog!r} has no rows: there is no galaxy to cut a stamp for")
    return reader


def bad_rows_lines(reader, command):
    """The lines that list the catalogue rows kept without a stamp for their RA/Dec (rows counted from 1)."""
    if not reader.bad_rows:
        return []
    count = len(reader.bad_rows)
    lines = [f"{command}: {_rows(count)} had unusable RA/Dec: kept without a stamp, flagged bad_coordinates "
             "(rows counted from 1):"]
    for row, reason in sorted(reader.bad_rows.items()):
        lines.append(f"  row {row + 1} ({reader.catalog.id_name} {reader.catalog.source(row)}): {reason}")
    return lines


def add_parser(subparsers):
    parser = subparsers.add_parser(
        "cutouts",
        help="cut stamps by RA/Dec from survey images into a FITS cube with a table of flags; needs gamornet[survey]",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_survey_arguments(parser, required=True)
    parser.add_argument("--output", required=True, metavar="STAMPS.fits", help="the FITS file to write")
    parser.add_argument("--input-shape", default="SDSS", metavar="SDSS|CANDELS|X,Y,1",
                        help="the stamps' size in pixels: that of a network's input (default: SDSS, 167x167 pixels "
                             "of 0.396 arcsec)")
    parser.add_argument("--hdu", type=int, metavar="N",
                        help="FITS HDU holding each image (default: every image HDU, such as the CCDs of a "
                             "multi-extension exposure)")
    parser.add_argument("--batch-size", type=int, default=64, metavar="N", help="rows cut at a time (default: 64)")
    parser.add_argument("--skip-bad", action="store_true",
                        help="keep catalogue rows whose RA/Dec are missing or out of range as planes of NaN, flagged "
                             "bad_coordinates (default: stop)")
    parser.add_argument("--no-progress", action="store_true", help="do not show the progress bar")
    parser.set_defaults(command_name="cutouts", handler=run)
    return parser


def _rows(count):
    return f"{count} row" + ("" if count == 1 else "s")


def run(args):
    """Run ``gamornet cutouts``; return the exit status."""
    from gamornet.cli._options import parse_input_shape
    from gamornet.survey.cutouts import write_stamps

    output = args.output
    if not output.lower().endswith((".fits", ".fit")):
        raise ValueError(f"--output must be a FITS file name ending in .fits. Received: {output!r}")
    folder = os.path.dirname(os.path.abspath(output))
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"--output: the folder {folder!r} does not exist")
    input_shape = parse_input_shape(args.input_shape)
    batch_size = _checks.check_positive_int(args.batch_size, "--batch-size")
    reader = survey_reader(args, input_shape, batch_size)
    counts = write_stamps(reader, output, progress=not args.no_progress)
    print(f"gamornet cutouts: wrote {_rows(counts['rows'])} to {output!r}: {counts['stamps']} with a stamp "
          f"({counts['partial']} partial), {counts['off_image']} off the images, {counts['no_finite_pixel']} with no "
          "finite pixel" + (f", {counts['skipped']} with unusable RA/Dec" if counts["skipped"] else ""),
          file=sys.stderr)
    for line in bad_rows_lines(reader, "gamornet cutouts"):
        print(line, file=sys.stderr)
    return 0
