"""Progress bars (progressbar2) for long work. Backend-neutral."""

import contextlib
import sys

import progressbar


class CurrentStderr:
    """Standard error as it is at each write.

    Given ``sys.stderr`` itself, progressbar2 writes to the stream that was
    standard error when progressbar2 was first imported, which may since have
    been replaced and closed (by a notebook kernel or a test runner).
    """

    def write(self, text):
        return sys.stderr.write(text)

    def flush(self):
        sys.stderr.flush()

    def isatty(self):
        try:
            return sys.stderr.isatty()
        except (AttributeError, ValueError):
            return False


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
    bar = progressbar.ProgressBar(max_value=total, widgets=widgets, fd=CurrentStderr(), redirect_stdout=False)
    bar.start()
    try:
        yield bar
        # progressbar2 redraws at most every few tenths of a second: show where the work ended.
        bar.update(bar.value, force=True)
    finally:
        bar.finish(dirty=True)
