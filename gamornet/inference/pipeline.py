"""A stream of images through a predictor into a table: the one classify loop.

``gamornet predict`` (one process) and every Dask worker of a cluster run
(:mod:`gamornet.survey.distributed`) classify through :func:`classify_stream`,
count what they met in an :class:`Outcome`, and describe it with
:func:`report_lines`. The reader is any of the package's image readers
(:class:`gamornet.io.images.ImageReader`, the stamps of
:class:`gamornet.survey.cutouts.CutoutReader`); the table is one of
:mod:`gamornet.io.tables`.
"""

import numpy as np

from gamornet._utils.progress import progress_bar
from gamornet.errors import BadInputError
from gamornet.science.classify import classify

__all__ = ["Outcome", "batch_rows", "classify_stream", "describe_thresholds", "report_lines"]


def describe_thresholds(thresholds):
    """A class rule in words: a handbook set's name, or its two thresholds."""
    if isinstance(thresholds, str):
        return thresholds
    return f"p_disk >= {thresholds.disk}, p_bulge >= {thresholds.bulge}" + (
        ", p_disk leading" if thresholds.disk_must_lead else ""
    )


class Outcome:
    """What a run met besides its rows: bad inputs, images with one value in every pixel, rows without one, and
    out-of-domain images."""

    def __init__(self):
        self.bad_inputs = []
        self.blank_sources = []
        self.without_image = 0
        self.out_of_domain = None  # with a model card to check against: {statistic: images}, and "any"
        self.refined = None  # bf16: {"predicted", "refined", "margin"}

    def count_out_of_domain(self, failed):
        counts = self.out_of_domain if self.out_of_domain is not None else {"any": 0}
        for entry in failed:
            if entry:
                counts["any"] += 1
                for name in entry.split(";"):
                    counts[name] = counts.get(name, 0) + 1
        self.out_of_domain = counts


def batch_rows(batch, result, classes, key_column, predictor_columns):
    """(sources, probabilities, classes, columns) of the rows of a batch, in input order: its images, and the
    rows without an image (catalogue rows off the survey images), with empty probabilities and class."""
    columns = dict(batch.columns)
    columns.update({name: result.columns[name] for name in predictor_columns})
    sources = columns[key_column] if key_column in columns else batch.sources
    if not batch.missing:
        return sources, result.probabilities, classes, columns
    order = list(batch.in_order())
    rows = {"sources": [], "probabilities": [], "classes": []}
    merged = {name: [] for name in columns}
    empty = (np.nan, np.nan, np.nan)
    # What a row without an image holds in a column it lacks: empty text in a text column (never the string 'nan').
    blank = {name: "" if np.asarray(values).dtype.kind in "OUS" else np.nan for name, values in columns.items()}
    for item in order:
        if isinstance(item, int):
            rows["sources"].append(sources[item])
            rows["probabilities"].append(result.probabilities[item])
            rows["classes"].append(classes[item])
            for name, values in columns.items():
                merged[name].append(values[item])
        else:
            rows["sources"].append(item.columns.get(key_column, item.source))
            rows["probabilities"].append(empty)
            rows["classes"].append("")
            for name in columns:
                merged[name].append(item.columns.get(name, blank[name]))
    merged = {name: np.asarray(values) for name, values in merged.items()}
    return rows["sources"], np.asarray(rows["probabilities"], dtype=np.float32), rows["classes"], merged


def classify_stream(reader, predictor, thresholds, table, progress, outcome):
    """Predict and classify every batch of ``reader`` into ``table`` through the predictor's batch loop."""
    done = 0
    with progress_bar(reader.total, "Classifying", enabled=progress) as bar:
        for batch, result in predictor.stream(reader):
            if len(batch.sources) or batch.missing:
                classes = classify(result.probabilities, thresholds)
                table.add(*batch_rows(batch, result, classes, table.key_columns[0], predictor.columns))
                outcome.blank_sources += [source for source, blank in zip(batch.sources, result.blank) if blank]
                outcome.without_image += len(batch.missing)
                if "out_of_domain" in result.columns:
                    outcome.count_out_of_domain(result.columns["out_of_domain"])
            outcome.bad_inputs.extend(batch.bad)
            done += len(batch.sources) + len(batch.bad) + len(batch.missing)
            if progress:
                bar.max_value = max(reader.total, done)
            bar.update(done)
            if batch.bad and not reader.skip_bad:
                raise BadInputError(batch.bad[0])


def _listing(items, limit=20):
    lines = [f"  {item}" for item in items[:limit]]
    if len(items) > limit:
        lines.append(f"  ... and {len(items) - limit} more")
    return lines


def report_lines(rows, outcome, output, thresholds, command="gamornet predict"):
    """The lines that tell a user what a run of ``rows`` table rows did: where the table is, with which thresholds, and
    what it met (rows without a stamp, blank images, out-of-domain images, bf16 refinements, bad inputs)."""
    where = "standard output" if output is None else repr(output)
    lines = [f"{command}: classified {rows - outcome.without_image} images with the thresholds "
             f"{describe_thresholds(thresholds)}; the table is in {where}"]
    if outcome.without_image:
        count = outcome.without_image
        lines.append(f"{command}: {count} catalogue row{'s' if count > 1 else ''} had no stamp (off the "
                     "images, no finite pixel, or unusable RA/Dec): their probabilities and class are empty in the "
                     "table")
    if outcome.blank_sources:
        count = len(outcome.blank_sources)
        lines.append(f"{command}: warning: {count} image{'s' if count > 1 else ''} had the same value in every "
                     "pixel (blank, or saturated everywhere): their probabilities say nothing about a galaxy:")
        lines += _listing(outcome.blank_sources)
    classified = rows - outcome.without_image
    if outcome.out_of_domain is not None and classified:
        counts = dict(outcome.out_of_domain)
        share = counts.pop("any") / classified
        by_name = "".join(f", {name} {count / classified:.1%}" for name, count in counts.items())
        lines.append(f"{command}: {share:.1%} of the images lie outside the model card's central 99% range of "
                     f"the training images (the column out_of_domain names the statistics{by_name})")  # fmt: skip
    if outcome.refined is not None and outcome.refined["predicted"]:
        refined, predicted = outcome.refined["refined"], outcome.refined["predicted"]
        lines.append(f"{command}: bf16: {refined} of {predicted} images ({refined / predicted:.1%}), whose "
                     f"class was decided by less than {outcome.refined['margin']:g} in probability, were predicted "
                     "again in fp32 and keep fp32's probabilities")  # fmt: skip
    if outcome.bad_inputs:
        plural = "s" if len(outcome.bad_inputs) > 1 else ""
        lines.append(f"{command}: skipped {len(outcome.bad_inputs)} bad input{plural}:")
        lines += _listing([str(bad) for bad in outcome.bad_inputs], limit=len(outcome.bad_inputs))
    return lines
