"""``gamornet models`` and ``gamornet download``, against a local FTP server in the published layout."""

import hashlib
import os

import pytest

import servers
from servers import environment  # noqa: F401  (autouse: private cache, empty working folder)
from legacy_files import write_keras2_file
from published_fixtures import write_saver_checkpoint

from gamornet.models import _registry
from gamornet.cli import main as cli
from gamornet.models.formats import tflearn_checkpoint

KERAS_SIM = _registry.published_model("CANDELS_sim", "keras")
TFLEARN_SIM = _registry.published_model("CANDELS_sim", "tflearn")
TABLE = _registry.published_file("pred_table_candels_keras")
TABLE_TEXT = b"".join(b"%d 0.1 0.2 0.7 bulge\n" % number for number in range(500))


@pytest.fixture(scope="module")
def server_root(tmp_path_factory, keras_case):
    """Stand-ins of the CANDELS_sim files (Keras and TFLearn) and a prediction table, laid out as on the server."""
    weights = keras_case("CANDELS")[1]
    folder = tmp_path_factory.mktemp("models")
    keras_file = write_keras2_file(str(folder / "model.hdf5"), weights, layout="weights")
    prefix = write_saver_checkpoint(str(folder / "check-562800"), weights)
    files = {KERAS_SIM.files[0]: keras_file, TABLE.path: TABLE_TEXT}
    for relative_path, suffix in zip(TFLEARN_SIM.files, tflearn_checkpoint.SUFFIXES):
        files[relative_path] = prefix + suffix
    root = tmp_path_factory.mktemp("ftp-root")
    servers.published_layout(root, files)
    return root


@pytest.fixture
def ftp(monkeypatch, server_root):
    with servers.FTPServer(server_root) as server:
        monkeypatch.setenv("GAMORNET_OFFLINE", "0")
        monkeypatch.setenv("GAMORNET_MIRROR", server.base_url)
        yield server


def served_sha256(server_root, relative_path):
    return hashlib.sha256(open(os.path.join(server_root, "pub", "aghosh", relative_path), "rb").read()).hexdigest()


def model_rows(output):
    """{(name, backend): the words of its row} of the `gamornet models` table."""
    rows = {}
    for line in output.splitlines():
        words = line.split()
        if len(words) >= 4 and words[0] in _registry.PUBLISHED_MODEL_NAMES and words[1] in _registry.BACKENDS:
            rows[(words[0], words[1])] = words
    return rows


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    output = capsys.readouterr().out
    assert "models" in output and "download" in output


def test_models_lists_every_published_model(capsys, environment):
    assert cli.main(["models"]) == 0
    output = capsys.readouterr().out
    assert f"cache:   {environment}" in output
    assert "source:  ftp://ftp.astro.yale.edu/pub/aghosh/   (offline: GAMORNET_OFFLINE is set)" in output
    assert "NAME         BACKEND  INPUT SHAPE  CACHED  SIZE  SHA256" in output
    rows = model_rows(output)
    assert sorted(rows) == sorted((entry.name, entry.backend) for entry in _registry.PUBLISHED_MODELS)
    assert rows[("SDSS_tl", "keras")] == ["SDSS_tl", "keras", "167x167x1", "no", "-", "-"]
    assert rows[("CANDELS_sim", "tflearn")] == ["CANDELS_sim", "tflearn", "83x83x1", "no", "-", "-"]
    assert "DATA FILE" not in output
    assert cli.main(["models", "--files"]) == 0
    output = capsys.readouterr().out
    for entry in _registry.PUBLISHED_FILES:
        assert f"{entry.name}" in output and entry.path in output


def test_download_both_backends(capsys, environment, ftp, server_root):
    assert cli.main(["download", "CANDELS_sim", "--backend", "both", "--quiet"]) == 0
    output = capsys.readouterr().out
    assert "CANDELS_sim (keras): downloaded" in output
    assert "CANDELS_sim (tflearn): downloaded" in output
    for relative_path in KERAS_SIM.files + TFLEARN_SIM.files:
        digest = served_sha256(server_root, relative_path)
        assert f"{environment / relative_path}" in output and f"sha256 {digest}" in output
    assert sorted(ftp.sent) == sorted(KERAS_SIM.files + TFLEARN_SIM.files)

    assert cli.main(["models"]) == 0
    rows = model_rows(capsys.readouterr().out)
    keras_digest = served_sha256(server_root, KERAS_SIM.files[0])
    assert rows[("CANDELS_sim", "keras")] == ["CANDELS_sim", "keras", "83x83x1", "yes", "114.3", "MiB", keras_digest]
    assert rows[("CANDELS_sim", "tflearn")][:4] == ["CANDELS_sim", "tflearn", "83x83x1", "yes"]
    assert rows[("CANDELS_tl", "keras")][3] == "no"

    # Again: nothing is transferred; with --force, everything is.
    assert cli.main(["download", "CANDELS_sim", "--backend", "both", "--quiet"]) == 0
    assert capsys.readouterr().out.count(": already cached") == 2
    assert len(ftp.sent) == 4
    assert cli.main(["download", "CANDELS_sim", "--force", "--quiet"]) == 0
    assert "CANDELS_sim (keras): downloaded" in capsys.readouterr().out
    assert len(ftp.sent) == 5


def test_download_a_data_file_and_verify(capsys, environment, ftp):
    assert cli.main(["download", TABLE.name]) == 0
    output = capsys.readouterr()
    assert f"{TABLE.name}: downloaded" in output.out
    assert "pred_table_candels.txt: 100%" in output.err  # the progress bar
    assert open(environment / TABLE.path, "rb").read() == TABLE_TEXT
    with open(environment / TABLE.path, "r+b") as stream:
        stream.write(b"9")
    assert cli.main(["models", "--files"]) == 0  # same size: only --verify sees it
    assert cli.main(["models", "--files", "--verify"]) == 1
    output = capsys.readouterr()
    assert f"{TABLE.name}" in output.out and "CHANGED" in output.out
    assert f"gamornet download {TABLE.name} --force" in output.err
    assert cli.main(["download", TABLE.name]) == 1
    assert "has changed since it was recorded" in capsys.readouterr().err
    assert cli.main(["download", TABLE.name, "--force", "--quiet"]) == 0
    assert open(environment / TABLE.path, "rb").read() == TABLE_TEXT


def test_download_unknown_name_downloads_nothing(capsys, environment, ftp):
    assert cli.main(["download", "CANDELS_sim", "HST_deep"]) == 1
    error = capsys.readouterr().err
    assert error.startswith("gamornet download: error: NAME must be a published model (SDSS_sim, SDSS_tl, "
                            "CANDELS_sim, CANDELS_tl) or data file (predict_images,")
    assert "Received: 'HST_deep'" in error
    assert ftp.sent == []
    with pytest.raises(SystemExit):
        cli.main(["download", "CANDELS_sim", "--backend", "pytorch"])
    assert "invalid choice: 'pytorch'" in capsys.readouterr().err


def test_download_offline_and_unreachable(capsys, monkeypatch, environment):
    assert cli.main(["download", "SDSS_tl"]) == 1
    error = capsys.readouterr().err
    assert "gamornet download: error: the Keras model 'SDSS_tl' is not in the cache, and GAMORNET_OFFLINE is set" in error
    assert "download URL: ftp://ftp.astro.yale.edu/pub/aghosh/gamornet_keras/trained_models/SDSS/tl/model_sdsss_tl.hdf5" in error
    port = servers.closed_port()
    monkeypatch.setenv("GAMORNET_OFFLINE", "0")
    monkeypatch.setenv("GAMORNET_MIRROR", f"ftp://127.0.0.1:{port}/pub/aghosh/")
    assert cli.main(["download", "SDSS_tl", "--quiet"]) == 1
    error = capsys.readouterr().err
    assert f"ftp://127.0.0.1:{port}/pub/aghosh/gamornet_keras/trained_models/SDSS/tl/model_sdsss_tl.hdf5: " \
           "connection refused" in error


def test_bad_settings_are_reported(capsys, monkeypatch):
    monkeypatch.setenv("GAMORNET_MIRROR", "gopher://example.org/")
    assert cli.main(["models"]) == 1
    assert "gamornet models: error: GAMORNET_MIRROR must list base URLs" in capsys.readouterr().err


def test_ctrl_c_during_a_download_says_what_is_kept(ftp, environment, monkeypatch, capsys):
    from gamornet.models._download import transfer

    original = transfer._transfer

    def interrupted_on_the_checkpoint(url, target, progress, timeout):
        if "check-562800" in url:
            raise KeyboardInterrupt
        return original(url, target, progress, timeout)

    monkeypatch.setattr(transfer, "_transfer", interrupted_on_the_checkpoint)
    assert cli.main(["download", "CANDELS_sim", "--backend", "both", "--quiet"]) == 130
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        "gamornet download: interrupted; the TFLearn model 'CANDELS_sim' was not downloaded (nothing of it is in the "
        "cache); the Keras model 'CANDELS_sim' is in the cache"
    ]
    assert os.path.isfile(environment / KERAS_SIM.files[0])
    assert not any(os.path.exists(environment / path) for path in TFLEARN_SIM.files)
