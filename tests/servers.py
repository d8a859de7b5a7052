"""Local servers for the downloader tests: FTP (pyftpdlib) and HTTP (http.server), on 127.0.0.1 only.

Each server binds an ephemeral port on the loopback interface, runs in a daemon
thread, and is a context manager: it starts on ``__enter__`` and stops (joining
its thread, bounded in time) on ``__exit__``. ``base_url`` is what
``GAMORNET_MIRROR`` is set to.

- :class:`FTPServer` serves a folder laid out like ``ftp.astro.yale.edu``
  (``<root>/pub/aghosh/gamornet_keras/...``) to anonymous users, read-only, and
  announces each file's size in its ``150`` reply as common FTP servers do (so
  the client can tell a transfer that stopped early).
- :class:`HTTPMirror` serves a folder over HTTP; it can be told to stop sending
  a file early.
- :class:`SilentServer` accepts connections and never answers (for timeouts);
  :func:`closed_port` gives a port on which nothing listens.

Run as a script to serve a folder by hand::

    python tests/servers.py ftp ROOT --seconds 600
"""

import argparse
import contextlib
import functools
import http.server
import logging
import os
import shutil
import socket
import sys
import threading
import time

import pytest

PROXY_VARIABLES = ("ftp_proxy", "http_proxy", "https_proxy", "all_proxy")


@pytest.fixture(autouse=True)
def environment(monkeypatch, tmp_path):
    """Offline, a private cache, no mirror and no proxy, in an empty working folder that must stay empty.

    Autouse in every test module that imports it. Yields the cache folder.
    """
    cache = tmp_path / "cache"
    monkeypatch.setenv("GAMORNET_OFFLINE", "1")
    monkeypatch.setenv("GAMORNET_CACHE_DIR", str(cache))
    monkeypatch.delenv("GAMORNET_MIRROR", raising=False)
    monkeypatch.delenv("GAMORNET_TIMEOUT", raising=False)
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    yield cache
    assert os.listdir(work) == [], "gamornet wrote into the working directory"


#: The published base path on the FTP server (SPEC §4).
PUBLISHED_BASE = "pub/aghosh/"

_STOP_TIMEOUT_S = 10.0


def published_layout(root, files):
    """Lay out ``files`` under ``<root>/pub/aghosh/`` as on the published FTP server.

    Parameters
    ----------
    root : str or path-like
        The folder a server will serve.
    files : dict
        {relative path (e.g. ``'gamornet_keras/trained_models/...hdf5'``):
        source file path or bytes}. Files are hard-linked where possible (model
        files are ~120 MB), else copied.

    Returns
    -------
    str
        The ``pub/aghosh`` folder.
    """
    base = os.path.join(os.fspath(root), *PUBLISHED_BASE.strip("/").split("/"))
    for relative_path, source in files.items():
        target = os.path.join(base, *relative_path.split("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if isinstance(source, (bytes, bytearray)):
            with open(target, "wb") as stream:
                stream.write(source)
        else:
            try:
                os.link(source, target)
            except OSError:
                shutil.copyfile(source, target)
    return base


class _ThreadedServer:
    """Start/stop bookkeeping shared by the servers."""

    port = None

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc_info):
        self.stop()


class FTPServer(_ThreadedServer):
    """An anonymous, read-only pyftpdlib FTP server on 127.0.0.1 serving ``root``.

    Parameters
    ----------
    root : str or path-like
        The folder served as ``/``; published files lie under ``pub/aghosh/``.
    announce_sizes : dict, optional
        {path relative to ``pub/aghosh/``: size in bytes to announce instead of
        the file's real size}, to play a transfer that stops early.
    announce : bool
        Announce sizes in the ``150`` reply at all (pyftpdlib does not by default).
    write_limit : int, optional
        Send at most this many bytes per second (to make a transfer last).

    Attributes
    ----------
    base_url : str
        ``ftp://127.0.0.1:<port>/pub/aghosh/``.
    sent : list of str
        Paths (relative to ``pub/aghosh/``) of the files sent completely, in order.
    """

    def __init__(self, root, announce_sizes=None, announce=True, write_limit=None):
        self.root = os.path.realpath(os.fspath(root))
        self.write_limit = write_limit
        self.announce_sizes = dict(announce_sizes or {})
        self.announce = announce
        self.sent = []
        self._server = None
        self._thread = None
        self._stopping = threading.Event()

    @property
    def base_url(self):
        return f"ftp://127.0.0.1:{self.port}/{PUBLISHED_BASE}"

    def _relative(self, path):
        base = os.path.join(self.root, *PUBLISHED_BASE.strip("/").split("/"))
        return os.path.relpath(os.path.realpath(path), base).replace(os.sep, "/")

    def _handler_class(self):
        from pyftpdlib.authorizers import DummyAuthorizer
        from pyftpdlib.handlers import FTPHandler

        authorizer = DummyAuthorizer()
        authorizer.add_anonymous(self.root)
        server = self

        class Handler(FTPHandler):
            _retrieving_size = None

            def ftp_RETR(self, file):
                if server.announce:
                    relative = server._relative(file)
                    with contextlib.suppress(OSError):
                        self._retrieving_size = server.announce_sizes.get(relative, os.path.getsize(file))
                try:
                    return super().ftp_RETR(file)
                finally:
                    self._retrieving_size = None

            def respond(self, resp, *args, **kwargs):
                # Like vsftpd and ProFTPD: "150 Opening BINARY mode data connection for x (1234 bytes)."
                if self._retrieving_size is not None and resp[:3] in ("125", "150"):
                    resp = f"150 Opening BINARY mode data connection ({self._retrieving_size} bytes)."
                return super().respond(resp, *args, **kwargs)

            def on_file_sent(self, file):
                server.sent.append(server._relative(file))

        Handler.authorizer = authorizer
        if self.write_limit:
            from pyftpdlib.handlers import ThrottledDTPHandler

            Handler.dtp_handler = type("Throttled", (ThrottledDTPHandler,), {"write_limit": self.write_limit})
        Handler.timeout = 30  # idle seconds before the server drops a client
        Handler.use_sendfile = False
        return Handler

    def start(self):
        from pyftpdlib.servers import FTPServer as _PyFTPServer

        # pyftpdlib logs every command to stderr unless logging is configured: keep it to warnings.
        ftp_logger = logging.getLogger("pyftpdlib")
        ftp_logger.setLevel(logging.WARNING)
        if not ftp_logger.handlers:
            ftp_logger.addHandler(logging.NullHandler())
        self._server = _PyFTPServer(("127.0.0.1", 0), self._handler_class())
        self.port = self._server.address[1]
        self._stopping.clear()
        self._thread = threading.Thread(target=self._serve, name=f"ftp-127.0.0.1:{self.port}", daemon=True)
        self._thread.start()

    def _serve(self):
        while not self._stopping.is_set():
            self._server.ioloop.loop(timeout=0.05, blocking=False)

    def stop(self):
        if self._thread is None:
            return
        self._stopping.set()
        self._thread.join(_STOP_TIMEOUT_S)
        self._server.close_all()
        self._thread = None


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    truncate_to = None

    def log_message(self, format, *args):
        pass

    def copyfile(self, source, outputfile):
        if self.truncate_to is None:
            return super().copyfile(source, outputfile)
        # Content-Length already announced the whole file: send less and hang up.
        outputfile.write(source.read(self.truncate_to))
        self.close_connection = True


class HTTPMirror(_ThreadedServer):
    """An HTTP server (``http.server``) on 127.0.0.1 serving ``root`` as a mirror.

    Parameters
    ----------
    root : str or path-like
        The folder served as ``/``.
    base : str
        The path under ``/`` where the published layout starts ('' when ``root``
        is itself the ``pub/aghosh`` folder).
    truncate_to : int, optional
        Send only this many bytes of every file (after announcing its full size).

    Attributes
    ----------
    base_url : str
        ``http://127.0.0.1:<port>/<base>``.
    """

    def __init__(self, root, base="", truncate_to=None):
        self.root = os.fspath(root)
        self.base = base
        self.truncate_to = truncate_to
        self._server = None
        self._thread = None

    @property
    def base_url(self):
        return f"http://127.0.0.1:{self.port}/{self.base}"

    def start(self):
        handler = type("Handler", (_QuietHandler,), {"truncate_to": self.truncate_to})
        self._server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(handler, directory=self.root)
        )
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()

    def stop(self):
        if self._thread is None:
            return
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(_STOP_TIMEOUT_S)
        self._thread = None


class SilentServer(_ThreadedServer):
    """A TCP server on 127.0.0.1 that accepts connections and never says a word.

    An FTP client waits for a greeting that never comes: this checks that the
    downloader gives up after its timeout.
    """

    def __init__(self):
        self._socket = None
        self._connections = []
        self._thread = None
        self._stopping = threading.Event()

    @property
    def base_url(self):
        return f"ftp://127.0.0.1:{self.port}/{PUBLISHED_BASE}"

    @property
    def connections(self):
        """How many connections it has accepted."""
        return len(self._connections)

    def start(self):
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(8)
        self._socket.settimeout(0.05)
        self.port = self._socket.getsockname()[1]
        self._stopping.clear()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self):
        while not self._stopping.is_set():
            with contextlib.suppress(OSError):
                connection, _ = self._socket.accept()
                self._connections.append(connection)

    def stop(self):
        if self._thread is None:
            return
        self._stopping.set()
        self._thread.join(_STOP_TIMEOUT_S)
        for connection in self._connections:
            connection.close()
        self._socket.close()
        self._thread = None


def closed_port():
    """A TCP port on 127.0.0.1 where nothing listens (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main(argv=None):
    """Serve a folder over FTP or HTTP on 127.0.0.1 for a while (for trying the CLI by hand)."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("kind", choices=("ftp", "http"))
    parser.add_argument("root", help="the folder to serve (for ftp, it holds pub/aghosh/...)")
    parser.add_argument("--seconds", type=float, default=600.0, help="stop after this long (default 600)")
    args = parser.parse_args(argv)
    server = FTPServer(args.root) if args.kind == "ftp" else HTTPMirror(args.root)
    with server:
        print(server.base_url, flush=True)
        time.sleep(args.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
