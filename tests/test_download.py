"""The downloader (gamornet.models._download) against real servers on 127.0.0.1, and file:// URLs.

A pyftpdlib FTP server serves stand-ins of the published files in the exact
layout of ftp.astro.yale.edu (pub/aghosh/...); http.server plays an HTTP
mirror. Every test runs with a private cache, offline unless it says otherwise,
with GAMORNET_MIRROR pointing at a local server, in an empty working folder
that must stay empty. Nothing beyond the loopback interface is ever contacted.
"""

import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time

import h5py
import numpy as np
import pytest

import reference
import servers
from servers import environment  # noqa: F401  (autouse: private cache, empty working folder)
from legacy_files import write_keras2_file
from published_fixtures import write_saver_checkpoint

from gamornet.models import _download
from gamornet.models import _registry
from gamornet.models.formats import tflearn_checkpoint
from gamornet.models.formats.keras_hdf5 import check as check_keras_model_file
from gamornet.presets import weight_shapes

CANDELS = (83, 83, 1)
KERAS_SIM = _registry.published_model("CANDELS_sim", "keras")
TFLEARN_SIM = _registry.published_model("CANDELS_sim", "tflearn")
KERAS_PATH = KERAS_SIM.files[0]
TABLE = _registry.published_file("pred_table_candels_keras")
TABLE_TEXT = b"".join(b"%d 0.7 0.2 0.1 disk\n" % number for number in range(2000))
TARBALL = _registry.published_file("predict_images")


def go_online(monkeypatch, *bases):
    monkeypatch.setenv("GAMORNET_OFFLINE", "0")
    monkeypatch.setenv("GAMORNET_MIRROR", " ".join(str(base) for base in bases))


def sha256(path):
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def cached_files(cache):
    """Every file in the cache, relative, except the lock files."""
    found = []
    for folder, _, names in os.walk(cache):
        for name in names:
            relative = os.path.relpath(os.path.join(folder, name), cache).replace(os.sep, "/")
            if not relative.startswith(".locks/"):
                found.append(relative)
    return sorted(found)


def cached_folders(cache):
    return sorted(
        os.path.relpath(os.path.join(folder, name), cache)
        for folder, names, _ in os.walk(cache) for name in names
    )


def manifest(cache):
    return json.loads((cache / "manifest.json").read_text())["files"]


def tarball_bytes():
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for number in range(2):
            content = np.random.default_rng(number).bytes(50_000)
            info = tarfile.TarInfo(f"predict_images/image_{number}.fits")
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


# --------------------------------------------------------------------------- fixtures: stand-in published files


@pytest.fixture(scope="module")
def candels(keras_case):
    """(images, weights) at the CANDELS shape, with known weights."""
    return keras_case("CANDELS")


@pytest.fixture(scope="module")
def keras_file(tmp_path_factory, candels):
    """A Keras 2.2.4 file of the CANDELS model with known weights (~120 MB)."""
    path = tmp_path_factory.mktemp("keras") / "model_candels_sim_trained.hdf5"
    return str(write_keras2_file(str(path), candels[1], layout="weights"))


@pytest.fixture(scope="module")
def tflearn_prefix(tmp_path_factory, candels):
    """A TFLearn-style checkpoint of the CANDELS model with known weights (~120 MB)."""
    return write_saver_checkpoint(str(tmp_path_factory.mktemp("tflearn") / "check-562800"), candels[1])


@pytest.fixture(scope="module")
def server_root(tmp_path_factory, keras_file, tflearn_prefix):
    """A folder laid out like ftp.astro.yale.edu, holding the stand-ins."""
    root = tmp_path_factory.mktemp("ftp-root")
    files = {KERAS_PATH: keras_file, TABLE.path: TABLE_TEXT, TARBALL.path: tarball_bytes()}
    for relative_path, suffix in zip(TFLEARN_SIM.files, tflearn_checkpoint.SUFFIXES):
        files[relative_path] = tflearn_prefix + suffix
    servers.published_layout(root, files)
    return root


@pytest.fixture
def ftp(server_root):
    with servers.FTPServer(server_root) as server:
        yield server


def aghosh(root):
    return os.path.join(root, "pub", "aghosh")


# --------------------------------------------------------------------------- settings


def test_cache_dir_resolution(monkeypatch, tmp_path):
    monkeypatch.setenv("GAMORNET_CACHE_DIR", str(tmp_path / "mine"))
    assert _download.cache_dir() == str(tmp_path / "mine")
    monkeypatch.delenv("GAMORNET_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert _download.cache_dir() == str(tmp_path / "xdg" / "gamornet")
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert _download.cache_dir() == str(tmp_path / "home" / ".cache" / "gamornet")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert _download.cache_dir() == str(tmp_path / "home" / ".cache" / "gamornet")
    assert _download.cached_path(KERAS_SIM) == str(tmp_path / "home" / ".cache" / "gamornet" / KERAS_PATH)


def test_mirror_list(monkeypatch, tmp_path):
    assert _download.mirror_urls() == ["ftp://ftp.astro.yale.edu/pub/aghosh/"]
    monkeypatch.setenv("GAMORNET_MIRROR", " https://example.org/gamornet ,ftp://127.0.0.1:2121/pub/aghosh/\n"
                                          f"{tmp_path}")
    assert _download.mirror_urls() == [
        "https://example.org/gamornet/", "ftp://127.0.0.1:2121/pub/aghosh/", tmp_path.as_uri() + "/"
    ]
    monkeypatch.setenv("GAMORNET_MIRROR", "gopher://example.org/")
    with pytest.raises(ValueError, match="GAMORNET_MIRROR must list base URLs .* Received 'gopher://example.org/'"):
        _download.mirror_urls()
    monkeypatch.setenv("GAMORNET_MIRROR", str(tmp_path / "no-such-folder"))
    with pytest.raises(ValueError, match="neither a URL nor a folder"):
        _download.mirror_urls()


@pytest.mark.parametrize("value, offline", [("1", True), ("true", True), ("ON", True), ("0", False), ("", False),
                                            ("no", False)])
def test_offline_values(monkeypatch, value, offline):
    monkeypatch.setenv("GAMORNET_OFFLINE", value)
    assert _download.is_offline() is offline


def test_bad_settings(monkeypatch):
    monkeypatch.setenv("GAMORNET_OFFLINE", "maybe")
    with pytest.raises(ValueError, match="GAMORNET_OFFLINE must be 1 .* Received GAMORNET_OFFLINE='maybe'"):
        _download.fetch_model("CANDELS_sim", "keras")
    go_online(monkeypatch, f"ftp://127.0.0.1:{servers.closed_port()}/pub/aghosh/")
    for value in ("soon", "-3", "nan"):
        monkeypatch.setenv("GAMORNET_TIMEOUT", value)
        with pytest.raises(ValueError, match="GAMORNET_TIMEOUT must be a positive number of seconds"):
            _download.fetch_model("CANDELS_sim", "keras")
    monkeypatch.setenv("GAMORNET_TIMEOUT", "2.5")
    assert _download.download_timeout() == 2.5


def test_unknown_names():
    with pytest.raises(ValueError, match="model name must be one of 'SDSS_sim', .* Received: 'HST_sim'"):
        _download.fetch_model("HST_sim", "keras")
    with pytest.raises(ValueError, match=r"backend must be one of \('keras', 'tflearn'\)"):
        _download.fetch_model("SDSS_sim", "pytorch")
    with pytest.raises(ValueError, match="data file name must be one of 'predict_images'"):
        _download.fetch_file("nothing")
    with pytest.raises(TypeError, match="expected a published model or data file"):
        _download.fetch("SDSS_sim")


# --------------------------------------------------------------------------- first and second use


def test_first_use_downloads_and_predicts_keras(monkeypatch, environment, ftp, candels, keras_file, capfd):
    from gamornet.keras_module import gamornet_predict_keras

    images, weights = candels
    go_online(monkeypatch, ftp.base_url)
    predictions = gamornet_predict_keras(images, "CANDELS_sim", "CANDELS")
    np.testing.assert_allclose(predictions, reference.forward(images, weights), atol=1e-4)

    local = environment / KERAS_PATH
    assert ftp.sent == [KERAS_PATH]
    assert cached_files(environment) == [KERAS_PATH, "manifest.json"]
    assert sha256(local) == sha256(keras_file)
    record = manifest(environment)[KERAS_PATH]
    assert record["sha256"] == sha256(keras_file)
    assert record["size"] == os.path.getsize(keras_file)
    assert record["source"] == ftp.base_url + KERAS_PATH
    output = capfd.readouterr()
    assert "model_candels_sim_trained.hdf5: 100%" in output.err  # the download's progress bar
    assert "model_candels_sim_trained" not in output.out  # wget itself prints nothing

    # Second use: the server is gone, then the network is forbidden; the cache answers.
    ftp.stop()
    np.testing.assert_allclose(gamornet_predict_keras(images, "CANDELS_sim", "CANDELS"), predictions, atol=1e-4)
    monkeypatch.setenv("GAMORNET_OFFLINE", "1")
    assert _download.fetch_model("CANDELS_sim", "keras") == str(local)
    assert ftp.sent == [KERAS_PATH]


def test_first_use_downloads_tflearn_checkpoint(monkeypatch, environment, ftp, tflearn_prefix):
    go_online(monkeypatch, ftp.base_url)
    prefix = _download.fetch_model("CANDELS_sim", "tflearn", progress=False)
    assert prefix == str(environment / TFLEARN_SIM.load_path)
    assert sorted(ftp.sent) == sorted(TFLEARN_SIM.files)
    assert cached_files(environment) == sorted(list(TFLEARN_SIM.files) + ["manifest.json"])
    records = manifest(environment)
    for relative_path, suffix in zip(TFLEARN_SIM.files, tflearn_checkpoint.SUFFIXES):
        assert records[relative_path]["sha256"] == sha256(tflearn_prefix + suffix) == sha256(prefix + suffix)
    tflearn_checkpoint.check(prefix, CANDELS)

    ftp.stop()
    monkeypatch.setenv("GAMORNET_OFFLINE", "1")
    assert _download.fetch_model("CANDELS_sim", "tflearn") == prefix


def test_tflearn_first_use_predicts(monkeypatch, environment, tmp_path):
    """End to end with the TFLearn backend, against the independent reference (TFLearn's LRN)."""
    import tflearn_files
    from gamornet import tflearn_module

    images, weights = tflearn_files.calibrated_case(CANDELS)
    # A checkpoint written by tflearn itself from a training graph, as the published ones were.
    prefix = tflearn_files.write_tflearn_checkpoint(str(tmp_path / "written" / "check-562800"), weights, CANDELS)
    root = tmp_path / "server"
    servers.published_layout(root, {relative_path: prefix + suffix for relative_path, suffix
                                    in zip(TFLEARN_SIM.files, tflearn_checkpoint.SUFFIXES)})
    with servers.FTPServer(root) as ftp:
        go_online(monkeypatch, ftp.base_url)
        predictions = tflearn_module.gamornet_predict_tflearn(images, "CANDELS_sim", "CANDELS")
        assert sorted(ftp.sent) == sorted(TFLEARN_SIM.files)
    expected = reference.forward(images, weights, lrn=reference.lrn_tflearn)
    np.testing.assert_allclose(predictions, expected, atol=1e-4)
    # Second use: the server is gone and the network forbidden.
    monkeypatch.setenv("GAMORNET_OFFLINE", "1")
    np.testing.assert_allclose(tflearn_module.gamornet_predict_tflearn(images, "CANDELS_sim", "CANDELS"),
                               predictions, atol=1e-4)


def test_http_mirror_after_an_unreachable_one(monkeypatch, environment, server_root, keras_file):
    closed = f"ftp://127.0.0.1:{servers.closed_port()}/pub/aghosh/"
    with servers.HTTPMirror(aghosh(server_root)) as http:
        go_online(monkeypatch, closed, http.base_url)
        path = _download.fetch_model("CANDELS_sim", "keras", progress=False)
    assert sha256(path) == sha256(keras_file)
    assert manifest(environment)[KERAS_PATH]["source"] == http.base_url + KERAS_PATH


def test_file_url_and_local_folder_mirrors(monkeypatch, environment, server_root, keras_file):
    go_online(monkeypatch, "file://" + aghosh(server_root))
    path = _download.fetch_model("CANDELS_sim", "keras", progress=False)
    assert sha256(path) == sha256(keras_file)
    assert manifest(environment)[KERAS_PATH]["source"].startswith("file://")
    go_online(monkeypatch, aghosh(server_root))
    table = _download.fetch_file(TABLE.name, progress=False)
    assert open(table, "rb").read() == TABLE_TEXT
    assert manifest(environment)[TABLE.path]["source"] == f"file://{aghosh(server_root)}/{TABLE.path}"


def test_data_files_and_tarballs(monkeypatch, environment, ftp):
    go_online(monkeypatch, ftp.base_url)
    assert open(_download.fetch_file(TABLE.name, progress=False), "rb").read() == TABLE_TEXT
    tarball = _download.fetch_file("predict_images", progress=False)
    with tarfile.open(tarball) as archive:
        assert archive.getnames() == ["predict_images/image_0.fits", "predict_images/image_1.fits"]
    assert set(manifest(environment)) == {TABLE.path, TARBALL.path}


# --------------------------------------------------------------------------- failed and damaged transfers


def assert_clean(cache):
    """Nothing but lock files (and a manifest, when one was written before) in the cache: no partial file."""
    assert cached_files(cache) in ([], ["manifest.json"])
    assert not [name for name in cached_folders(cache) if ".download-" in name]


def test_truncated_ftp_transfer_leaves_the_cache_clean(monkeypatch, environment, tmp_path, keras_file):
    root = tmp_path / "truncated"
    servers.published_layout(root, {KERAS_PATH: open(keras_file, "rb").read(1_000_000)})
    # The server announces the whole size, then stops early, as a dropped connection does.
    with servers.FTPServer(root, announce_sizes={KERAS_PATH: os.path.getsize(keras_file)}) as ftp:
        go_online(monkeypatch, ftp.base_url)
        with pytest.raises(_download.DownloadError) as caught:
            _download.fetch_model("CANDELS_sim", "keras", progress=False)
    message = str(caught.value)
    assert f"{ftp.base_url}{KERAS_PATH}: the transfer stopped early" in message
    assert "got only 1000000 out of" in message
    assert "Nothing was written to the cache" in message
    assert_clean(environment)


def test_truncated_file_without_announced_size_is_rejected(monkeypatch, environment, tmp_path, keras_file):
    root = tmp_path / "truncated"
    servers.published_layout(root, {KERAS_PATH: open(keras_file, "rb").read(1_000_000)})
    with servers.FTPServer(root, announce=False) as ftp:
        go_online(monkeypatch, ftp.base_url)
        with pytest.raises(_download.DownloadError, match=(
            f"{ftp.base_url}{KERAS_PATH}: the downloaded file is not valid: could not open the Keras model file "
            "'model_candels_sim_trained.hdf5' as HDF5"
        )):
            _download.fetch_model("CANDELS_sim", "keras", progress=False)
    assert_clean(environment)


def test_truncated_http_transfer(monkeypatch, environment, server_root):
    with servers.HTTPMirror(aghosh(server_root), truncate_to=100) as http:
        go_online(monkeypatch, http.base_url)
        with pytest.raises(_download.DownloadError,
                           match=f"{http.base_url}{TABLE.path}: the transfer stopped early"):
            _download.fetch_file(TABLE.name, progress=False)
    assert_clean(environment)


def test_truncated_tarball_is_rejected(monkeypatch, environment, tmp_path):
    root = tmp_path / "truncated"
    servers.published_layout(root, {TARBALL.path: tarball_bytes()[:30_000]})
    with servers.FTPServer(root, announce=False) as ftp:
        go_online(monkeypatch, ftp.base_url)
        with pytest.raises(_download.DownloadError, match="the archive .* is damaged or incomplete"):
            _download.fetch_file("predict_images", progress=False)
    assert_clean(environment)


def test_corrupt_or_wrong_model_on_the_server_is_rejected(monkeypatch, environment, tmp_path):
    not_hdf5 = tmp_path / "random.bin"
    not_hdf5.write_bytes(np.random.default_rng(0).bytes(4096))
    other_shape = (8, 8, 1)
    wrong = write_keras2_file(str(tmp_path / "wrong.hdf5"), [
        (np.zeros(kernel, np.float32), np.zeros(bias, np.float32)) for kernel, bias in weight_shapes(other_shape)
    ], layout="weights")
    for source, expected in ((not_hdf5, "as HDF5"),
                             (wrong, r"not hold a GaMorNet model for input shape \(83, 83, 1\): weighted layer 6")):
        root = tmp_path / f"server-{os.path.basename(source)}"
        servers.published_layout(root, {KERAS_PATH: str(source)})
        with servers.FTPServer(root) as ftp:
            go_online(monkeypatch, ftp.base_url)
            with pytest.raises(_download.DownloadError, match=f"{KERAS_PATH}: the downloaded file is not valid: .*{expected}"):
                _download.fetch_model("CANDELS_sim", "keras", progress=False)
        assert_clean(environment)


def test_tflearn_files_enter_the_cache_together(monkeypatch, environment, tmp_path, tflearn_prefix):
    data, index, meta = TFLEARN_SIM.files
    # The index is missing on the server: neither of the two others may enter the cache.
    root = tmp_path / "no-index"
    servers.published_layout(root, {data: tflearn_prefix + ".data-00000-of-00001", meta: tflearn_prefix + ".meta"})
    with servers.FTPServer(root) as ftp:
        go_online(monkeypatch, ftp.base_url)
        with pytest.raises(_download.DownloadError, match=f"{ftp.base_url}{index}: .*550"):
            _download.fetch_model("CANDELS_sim", "tflearn", progress=False)
    assert_clean(environment)
    # A damaged data file: caught by the checks, nothing enters the cache.
    root = tmp_path / "bad-data"
    damaged = bytearray(open(tflearn_prefix + ".data-00000-of-00001", "rb").read())
    damaged[len(damaged) // 2] ^= 0xFF
    servers.published_layout(root, {data: bytes(damaged), index: tflearn_prefix + ".index",
                                     meta: tflearn_prefix + ".meta"})
    with servers.FTPServer(root) as ftp:
        go_online(monkeypatch, ftp.base_url)
        with pytest.raises(_download.DownloadError, match="the downloaded file is not valid: the TFLearn checkpoint "
                                                          "'check-562800' is corrupt: reading 'FullyConnected_1/W'"):
            _download.fetch_model("CANDELS_sim", "tflearn", progress=False)
    assert_clean(environment)


def test_partial_tflearn_cache_is_downloaded_again(monkeypatch, environment, ftp):
    go_online(monkeypatch, ftp.base_url)
    prefix = _download.fetch_model("CANDELS_sim", "tflearn", progress=False)
    os.remove(prefix + ".meta")
    assert _download.cached_status(TFLEARN_SIM).state == "partial"
    monkeypatch.setenv("GAMORNET_OFFLINE", "1")
    with pytest.raises(_download.DownloadError, match="is not in the cache"):
        _download.fetch_model("CANDELS_sim", "tflearn")
    monkeypatch.setenv("GAMORNET_OFFLINE", "0")
    assert _download.fetch_model("CANDELS_sim", "tflearn", progress=False) == prefix
    assert len(ftp.sent) == 6
    assert _download.cached_status(TFLEARN_SIM, verify=True).state == "cached"


def test_unreachable_server(monkeypatch, environment):
    port = servers.closed_port()
    base = f"ftp://127.0.0.1:{port}/pub/aghosh/"
    go_online(monkeypatch, base, f"http://127.0.0.1:{port}/")
    start = time.monotonic()
    with pytest.raises(_download.DownloadError) as caught:
        _download.fetch_model("CANDELS_sim", "keras", progress=False)
    assert time.monotonic() - start < 10
    message = str(caught.value)
    assert message.startswith("could not download the Keras model 'CANDELS_sim':")
    assert f"{base}{KERAS_PATH}: connection refused (no server is listening there)" in message
    assert f"http://127.0.0.1:{port}/{KERAS_PATH}: connection refused" in message
    assert "set GAMORNET_MIRROR to a mirror" in message
    assert str(environment / KERAS_PATH) in message
    assert_clean(environment)


def test_silent_server_times_out(monkeypatch, environment):
    monkeypatch.setenv("GAMORNET_TIMEOUT", "1")
    with servers.SilentServer() as silent:
        go_online(monkeypatch, silent.base_url)
        start = time.monotonic()
        with pytest.raises(_download.DownloadError, match=(
            f"{silent.base_url}{TABLE.path}: no answer within 1 s \\(set GAMORNET_TIMEOUT to wait longer\\)"
        )):
            _download.fetch_file(TABLE.name, progress=False)
        assert time.monotonic() - start < 10
    assert_clean(environment)


def test_known_sha256_is_checked(monkeypatch, environment, ftp):
    good = hashlib.sha256(TABLE_TEXT).hexdigest()
    wrong = "0" * 64
    go_online(monkeypatch, ftp.base_url)
    with pytest.raises(_download.DownloadError, match=f"the file's sha256 is {good}, but the published one is {wrong}"):
        _download.fetch(_registry.PublishedFile(TABLE.name, TABLE.path, sha256=wrong), progress=False)
    assert_clean(environment)
    path = _download.fetch(_registry.PublishedFile(TABLE.name, TABLE.path, sha256=good), progress=False)
    assert open(path, "rb").read() == TABLE_TEXT
    with pytest.raises(_download.CacheIntegrityError, match=f"does not match the published sha256 {wrong}"):
        _download.fetch(_registry.PublishedFile(TABLE.name, TABLE.path, sha256=wrong), progress=False)


# --------------------------------------------------------------------------- integrity of the cache


def test_changed_cached_file_is_detected(monkeypatch, environment, ftp, keras_file):
    go_online(monkeypatch, ftp.base_url)
    path = _download.fetch_model("CANDELS_sim", "keras", progress=False)
    with open(path, "r+b") as stream:  # one flipped byte in the weights: same size, other content
        stream.seek(os.path.getsize(path) // 2)
        byte = stream.read(1)
        stream.seek(-1, os.SEEK_CUR)
        stream.write(bytes([byte[0] ^ 0x01]))
    assert _download.cached_status(KERAS_SIM).state == "cached"  # sizes match
    assert _download.cached_status(KERAS_SIM, verify=True).state == "changed"
    monkeypatch.setenv("GAMORNET_OFFLINE", "1")
    with pytest.raises(_download.CacheIntegrityError, match=(
        "has changed since it was recorded .* It is damaged or was modified. Download it again with "
        "`gamornet download CANDELS_sim --backend keras --force`"
    )):
        _download.fetch_model("CANDELS_sim", "keras")
    with pytest.raises(_download.DownloadError, match="cannot download the Keras model 'CANDELS_sim' again"):
        _download.fetch_model("CANDELS_sim", "keras", force=True)
    monkeypatch.setenv("GAMORNET_OFFLINE", "0")
    assert _download.fetch_model("CANDELS_sim", "keras", force=True, progress=False) == path
    assert sha256(path) == sha256(keras_file)
    assert ftp.sent == [KERAS_PATH, KERAS_PATH]
    # A file cut short is caught by its size.
    with open(path, "r+b") as stream:
        stream.truncate(1000)
    assert _download.cached_status(KERAS_SIM).state == "changed"
    with pytest.raises(_download.CacheIntegrityError, match="its size is now 1000 bytes"):
        _download.fetch_model("CANDELS_sim", "keras")


def test_file_placed_by_hand_is_checked_and_recorded(environment, keras_file):
    target = environment / KERAS_PATH
    target.parent.mkdir(parents=True)
    target.write_bytes(b"not a model")
    assert _download.cached_status(KERAS_SIM).state == "unrecorded"
    with pytest.raises(_download.CacheIntegrityError, match="found in the cache at .* is not usable: .*as HDF5"):
        _download.fetch_model("CANDELS_sim", "keras")
    os.remove(target)
    os.link(keras_file, target)
    assert _download.fetch_model("CANDELS_sim", "keras") == str(target)  # offline: checked, then recorded
    assert manifest(environment)[KERAS_PATH]["source"] == "found in the cache (not downloaded by gamornet)"
    assert _download.cached_status(KERAS_SIM, verify=True).state == "cached"


def test_unreadable_manifest(environment):
    environment.mkdir()
    (environment / "manifest.json").write_text("{not json")
    with pytest.raises(OSError, match="the cache manifest .* cannot be read .* Delete it"):
        _download.read_manifest()
    (environment / "manifest.json").write_text("[1, 2]")
    with pytest.raises(OSError, match="is not a gamornet manifest"):
        _download.cached_status(TABLE)


def test_offline_without_cache_says_what_to_do(monkeypatch, environment):
    with pytest.raises(_download.DownloadError) as caught:
        _download.fetch_model("CANDELS_sim", "keras")
    message = str(caught.value)
    assert "the Keras model 'CANDELS_sim' is not in the cache, and GAMORNET_OFFLINE is set" in message
    assert f"download URL: ftp://ftp.astro.yale.edu/pub/aghosh/{KERAS_PATH}" in message
    assert f"cache path:   {environment / KERAS_PATH}" in message
    assert "`gamornet download CANDELS_sim --backend keras`" in message
    assert "download the file(s) by hand" in message and "set GAMORNET_MIRROR" in message
    # The TFLearn checkpoint lists its three files; offline never opens a connection, even to a mirror.
    with servers.SilentServer() as silent:
        monkeypatch.setenv("GAMORNET_MIRROR", silent.base_url)
        with pytest.raises(_download.DownloadError) as caught:
            _download.fetch_model("CANDELS_sim", "tflearn")
        time.sleep(0.2)
        assert silent.connections == 0
    for relative_path in TFLEARN_SIM.files:
        assert f"download URL: {silent.base_url}{relative_path}" in str(caught.value)
    assert not environment.exists() or cached_files(environment) == []


# --------------------------------------------------------------------------- concurrency

_CONCURRENT_FETCH = r"""
import os, sys, time
from gamornet.models import _download
ready, go = sys.argv[1], sys.argv[2]
open(ready, "w").close()
deadline = time.monotonic() + 60
while not os.path.exists(go) and time.monotonic() < deadline:
    time.sleep(0.005)
print(_download.fetch_model("CANDELS_sim", "keras", progress=False))
"""


def test_two_processes_download_once(monkeypatch, environment, tmp_path, server_root, keras_file):
    sync = tmp_path / "sync"
    sync.mkdir()
    # ~3 s per transfer, so that the two processes surely meet at the lock.
    with servers.FTPServer(server_root, write_limit=40_000_000) as ftp:
        go_online(monkeypatch, ftp.base_url)
        processes = [
            subprocess.Popen([sys.executable, "-c", _CONCURRENT_FETCH, str(sync / f"ready-{number}"), str(sync / "go")],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for number in range(2)
        ]
        deadline = time.monotonic() + 60
        while not all((sync / f"ready-{number}").exists() for number in range(2)) and time.monotonic() < deadline:
            time.sleep(0.01)
        (sync / "go").touch()
        results = [process.communicate(timeout=120) for process in processes]
    for process, (out, err) in zip(processes, results):
        assert process.returncode == 0, err
        assert out.strip() == str(environment / KERAS_PATH)
    assert ftp.sent == [KERAS_PATH]  # one transfer: the second process waited, then used the cache
    assert any("waiting for another process to finish with the Keras model 'CANDELS_sim'" in err
               for _, err in results)
    assert sha256(environment / KERAS_PATH) == sha256(keras_file)
    assert cached_files(environment) == [KERAS_PATH, "manifest.json"]
    assert not [name for name in cached_folders(environment) if ".download-" in name]


def test_lock_wait_is_bounded(monkeypatch, environment):
    go_online(monkeypatch, f"ftp://127.0.0.1:{servers.closed_port()}/pub/aghosh/")
    monkeypatch.setattr(_download.cache, "LOCK_TIMEOUT_S", 0.3)
    lock = environment / ".locks" / "keras-CANDELS_sim.lock"
    with _download.cache.file_lock(str(lock), 1.0, "a test"):
        start = time.monotonic()
        with pytest.raises(TimeoutError, match=(
            "waited 0.3 s for another gamornet process to finish with the Keras model 'CANDELS_sim': it holds "
            "the lock file"
        )):
            _download.fetch_model("CANDELS_sim", "keras", progress=False)
        assert time.monotonic() - start < 5


def test_leftovers_of_a_killed_download_are_removed(monkeypatch, environment, ftp):
    folder = (environment / TABLE.path).parent
    leftover = folder / ".download-pred_table_candels.txt-killed"
    leftover.mkdir(parents=True)
    (leftover / "pred_table_candels.txt").write_bytes(b"half")
    go_online(monkeypatch, ftp.base_url)
    _download.fetch_file(TABLE.name, progress=False)
    assert not leftover.exists()


# --------------------------------------------------------------------------- the checks themselves


def test_check_keras_model_file(tmp_path, keras_file):
    check_keras_model_file(keras_file, CANDELS)
    with pytest.raises(ValueError, match=r"for input shape \(167, 167, 1\): weighted layer 6 \('dense_1'\) holds "
                                         r"weights of shapes \[\(2304, 4096\), \(4096,\)\], expected "
                                         r"\[\(9216, 4096\), \(4096,\)\]"):
        check_keras_model_file(keras_file, (167, 167, 1))
    small = (8, 8, 1)
    weights = [(np.zeros(kernel, np.float32), np.zeros(bias, np.float32)) for kernel, bias in weight_shapes(small)]
    weights[2] = (weights[2][0], np.full(weights[2][1].shape, np.nan, np.float32))
    path = write_keras2_file(str(tmp_path / "nan.hdf5"), weights, layout="model")
    with pytest.raises(ValueError, match=r"is corrupt: weighted layer 3 \('conv2d_3'\) holds weights that are not finite"):
        check_keras_model_file(path, small)
    with h5py.File(tmp_path / "empty.hdf5", "w"):
        pass
    with pytest.raises(ValueError, match="expected 8 layers with weights"):
        check_keras_model_file(str(tmp_path / "empty.hdf5"), small)
    with pytest.raises(OSError, match="could not open the Keras model file .* as HDF5"):
        check_keras_model_file(str(tmp_path / "missing.hdf5"), small)


def test_check_tflearn_checkpoint(tmp_path, tflearn_prefix):
    tflearn_checkpoint.check(tflearn_prefix, CANDELS)
    with pytest.raises(ValueError, match=r"for input shape \(167, 167, 1\): weighted layer 6 \('FullyConnected'\) "
                                         r"holds weights of shapes \[\(2304, 4096\), \(4096,\)\], expected "
                                         r"\[\(9216, 4096\), \(4096,\)\]"):
        tflearn_checkpoint.check(tflearn_prefix, (167, 167, 1))

    def damaged_copy(name, suffix, content):
        prefix = str(tmp_path / name / "check-1")
        os.makedirs(os.path.dirname(prefix))
        for ending in tflearn_checkpoint.SUFFIXES:
            if ending == suffix:
                with open(prefix + ending, "wb") as stream:
                    stream.write(content(open(tflearn_prefix + ending, "rb").read()))
            else:
                os.link(tflearn_prefix + ending, prefix + ending)
        return prefix

    short_index = damaged_copy("index", ".index", lambda content: content[: len(content) // 2])
    with pytest.raises(ValueError, match="could not read the TFLearn checkpoint .*check-1'"):
        tflearn_checkpoint.check(short_index, CANDELS)
    short_data = damaged_copy("data", ".data-00000-of-00001", lambda content: content[: len(content) // 2])
    with pytest.raises(ValueError, match="the TFLearn checkpoint .* is corrupt: reading '.*' failed: Read less bytes"):
        tflearn_checkpoint.check(short_data, CANDELS)
    short_meta = damaged_copy("meta", ".meta", lambda content: content[: len(content) // 2 + 1])
    with pytest.raises(ValueError, match=r"the TFLearn graph file .*check-1\.meta' is corrupt"):
        tflearn_checkpoint.check(short_meta, CANDELS)
    os.remove(short_meta + ".meta")
    with pytest.raises(FileNotFoundError, match=r"the TFLearn checkpoint .* is incomplete: .*check-1\.meta' is missing"):
        tflearn_checkpoint.check(short_meta, CANDELS)
    # Other variable names (not a GaMorNet checkpoint).
    other = write_saver_checkpoint(str(tmp_path / "other" / "check-2"),
                                   [(np.ones((2, 2), np.float32), np.ones(2, np.float32))], names=[("a/W", "a/b")])
    with pytest.raises(ValueError, match=r"does not hold a GaMorNet network: it lacks the variables \['Conv2D/W', "
                                         r"'Conv2D/b'"):
        tflearn_checkpoint.check(other, CANDELS)


# --------------------------------------------------------------------------- a failed or impossible download leaves nothing


def test_a_failed_download_leaves_no_empty_folders(monkeypatch, environment):
    go_online(monkeypatch, f"ftp://127.0.0.1:{servers.closed_port()}/pub/aghosh/")
    with pytest.raises(_download.DownloadError, match="Nothing was written to the cache"):
        _download.fetch_model("CANDELS_sim", "keras", progress=False)
    # Only the lock folder remains: not gamornet_keras/trained_models/CANDELS/sim_trained/.
    assert cached_folders(environment) == [".locks"]
    assert cached_files(environment) == []


def test_a_read_only_cache_names_the_setting_to_change(tmp_path, server_root):
    """An empty cache on a read-only file system (a tmpfs mounted read-only in a private mount namespace)."""
    if shutil.which("unshare") is None:
        pytest.fail("this test needs util-linux's unshare to mount a read-only file system")
    cache = tmp_path / "readonly-cache"
    cache.mkdir()
    script = ("from gamornet import models\n"
              "try:\n    models.fetch('CANDELS_sim', progress=False)\n"
              "except OSError as error:\n    print('ERROR', type(error).__name__, error)\n")
    environment = dict(os.environ, GAMORNET_CACHE_DIR=str(cache), GAMORNET_OFFLINE="0",
                       GAMORNET_MIRROR=aghosh(server_root))
    command = f"mount -t tmpfs -o ro tmpfs {cache} && exec {sys.executable} -c \"$SCRIPT\""
    result = subprocess.run(["unshare", "--map-root-user", "--mount", "sh", "-c", command],
                            env=dict(environment, SCRIPT=script), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert f"ERROR OSError the gamornet cache folder '{cache}' cannot be written" in result.stdout
    assert "Read-only file system" in result.stdout
    assert "Set GAMORNET_CACHE_DIR to a folder you can write" in result.stdout
    assert "[Errno" not in result.stdout  # not the raw message
