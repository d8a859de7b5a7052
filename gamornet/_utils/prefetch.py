"""A background thread that prepares the next items of a stream while the current one is used.

Backend-neutral: the predictor uses it to read, convert and hand batches to
TensorFlow while the network works on the previous batch.
"""

import queue
import threading

from gamornet._utils import checks as _checks

__all__ = ["prefetch"]


class _Failure:
    def __init__(self, error):
        self.error = error


_DONE = object()


def prefetch(iterable, depth=2):
    """Iterate ``iterable`` in a background thread, ``depth`` items ahead.

    Reading and converting the next batches then overlaps the computation on
    the current one (TensorFlow and file reads release the GIL). An exception
    in the background is raised in the caller, at the item where it occurred.
    Leaving the loop early stops the background thread after at most one more
    item.

    Parameters
    ----------
    iterable : iterable
    depth : int
        How many items may wait, ready, in memory.

    Yields
    ------
    The items of ``iterable``, in order.
    """
    depth = _checks.check_positive_int(depth, "depth")
    ready = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item):
        while not stop.is_set():
            try:
                ready.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def work():
        iterator = iter(iterable)
        try:
            for item in iterator:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as error:  # noqa: BLE001 - handed to the caller's thread
            put(_Failure(error))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    worker = threading.Thread(target=work, name="gamornet-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item = ready.get()
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.error
            yield item
    finally:
        stop.set()
        worker.join()
