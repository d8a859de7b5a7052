"""Progress bars (progressbar2) for long work. Backend-neutral."""

import contextlib
import sys

import progressbar


class _NoBar:
    def update(self, value):
        pass


@contextlib.contextmanager
def progress_bar(total, label, unit="images", enabled=True):
    """A progress bar over ``total`` items showing the rate in ``unit``/s.

    Written to standard error; a no-op when ``enabled`` is False.
    """
    if not enabled:
        yield _NoBar()
        return
    widgets = [
        f"{label}: ",
        progressbar.Percentage(),
        " ",
        progressbar.Bar(),
        " ",
        progressbar.SimpleProgress(format=f"%(value)d of %(max_value)d {unit}"),
        " ",
        progressbar.FileTransferSpeed(unit=unit.rstrip("s") or unit, prefixes=("", "k", "M")),
        " ",
        progressbar.ETA(),
    ]
    bar = progressbar.ProgressBar(max_value=total, widgets=widgets, fd=sys.stderr, redirect_stdout=False)
    bar.start()
    try:
        yield bar
    finally:
        bar.finish(dirty=True)
