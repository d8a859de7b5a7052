"""The backend-neutral core: presets, the label rule, argument checks, atomic writes."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from gamornet import presets
from gamornet._utils import atomic as _atomic
from gamornet._utils import checks as _checks


def test_core_imports_neither_tensorflow_nor_tflearn():
    script = (
        "import sys\n"
        "import gamornet, gamornet.presets, gamornet._utils.checks, gamornet.models._registry, gamornet._utils.atomic, "
        "gamornet._utils.progress, gamornet.cli.main, gamornet.models, gamornet.errors, gamornet.models.formats, "
        "gamornet.models.formats.keras_hdf5, gamornet.models.formats.tflearn_checkpoint, gamornet.models._download, gamornet.io.images, "
        "gamornet.io.tables, gamornet._utils.prefetch\n"
        "gamornet.cli.main.build_parser()\n"
        "assert callable(gamornet.load_predictor) and gamornet.models.list_models()\n"
        "heavy = [m for m in ('tensorflow', 'tflearn', 'keras') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", script], check=True)


def test_presets_follow_the_paper():
    assert presets.INPUT_SHAPES == {"SDSS": (167, 167, 1), "CANDELS": (83, 83, 1)}
    assert presets.TRAINABLE_BOOLS_PRESETS["train_bools_SDSS"] == (True,) * 8
    assert presets.TRAINABLE_BOOLS_PRESETS["train_bools_CANDELS"] == (False,) * 3 + (True,) * 5
    assert presets.LOAD_BOOLS_PRESETS["load_bools_SDSS"] == (True,) * 5 + (False,) * 3
    assert presets.LOAD_BOOLS_PRESETS["load_bools_CANDELS"] == (True,) * 6 + (False,) * 2


@pytest.mark.parametrize(
    "ratio, expected",
    [(0.0, 0), (0.4499, 0), (0.45, 1), (0.5, 1), (0.55, 1), (0.5501, 2), (1.0, 2)],
)
def test_label_rule_from_bulge_to_total(ratio, expected):
    labels = presets.labels_from_bulge_to_total([ratio])
    np.testing.assert_array_equal(labels, np.eye(3)[[expected]])


def test_label_rule_in_magnitudes_agrees_with_the_ratio():
    # d = m_disk - m_bulge; B/T = 1 / (1 + 10**(-0.4 d)), computed here independently.
    differences = np.array([-1.0, -0.2201, -0.22, 0.0, 0.22, 0.2201, 1.0])
    labels = presets.labels_from_magnitudes(20.0 + differences, np.full(7, 20.0))
    np.testing.assert_array_equal(labels.argmax(axis=1), [0, 0, 1, 1, 1, 2, 2])
    ratios = 1.0 / (1.0 + 10 ** (-0.4 * np.array([-1.0, 0.0, 1.0])))
    np.testing.assert_array_equal(presets.labels_from_bulge_to_total(ratios).argmax(axis=1), [0, 1, 2])


@pytest.mark.parametrize("bad", [-0.1, 1.1, np.nan])
def test_label_rule_refuses_impossible_ratios(bad):
    with pytest.raises(ValueError, match="between 0 and 1"):
        presets.labels_from_bulge_to_total([0.2, bad])


def test_label_rule_refuses_bad_shapes_and_magnitudes():
    with pytest.raises(ValueError, match="1-D"):
        presets.labels_from_bulge_to_total([[0.2]])
    with pytest.raises(ValueError, match="same length"):
        presets.labels_from_magnitudes([20.0, 21.0], [20.0])
    with pytest.raises(ValueError, match="finite"):
        presets.labels_from_magnitudes([np.inf], [20.0])


@pytest.mark.parametrize(
    "value, expected",
    [("SDSS", (167, 167, 1)), ("CANDELS", (83, 83, 1)), ((64, 32, 2), (64, 32, 2)), ([10, 10, 1], (10, 10, 1)),
     (np.array([5, 5, 1]), (5, 5, 1))],
)
def test_input_shape(value, expected):
    assert _checks.check_input_shape(value) == expected


@pytest.mark.parametrize(
    "value, error, match",
    [
        ("HST", ValueError, r"'SDSS', 'CANDELS' or a tuple \(x, y, ndim\). Received: input_shape='HST'"),
        ((64, 64), ValueError, "three positive ints"),
        ((64, 0, 1), ValueError, "three positive ints"),
        ((64.0, 64, 1), ValueError, "three positive ints"),
        ((True, 64, 1), ValueError, "three positive ints"),
        (167, TypeError, "Received an object of type int"),
    ],
)
def test_input_shape_errors(value, error, match):
    with pytest.raises(error, match=match):
        _checks.check_input_shape(value)


def test_bools():
    load_presets = presets.LOAD_BOOLS_PRESETS
    assert _checks.check_bools("load_bools_SDSS", "load_layers_bools", load_presets) == [True] * 5 + [False] * 3
    assert _checks.check_bools((np.bool_(True),) * 8, "x", load_presets) == [True] * 8
    with pytest.raises(ValueError, match="exactly 8 booleans.*Received 9"):
        _checks.check_bools([True] * 9, "x", load_presets)
    with pytest.raises(TypeError, match="must hold booleans"):
        _checks.check_bools([0] * 8, "x", load_presets)
    with pytest.raises(ValueError, match="Received: x='SDSS'"):
        _checks.check_bools("SDSS", "x", load_presets)


def test_images_memory_mapped_and_chunked(tmp_path):
    path = tmp_path / "images.npy"
    images = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(600, 8, 8, 1))
    images[:] = 1.0
    images.flush()
    mapped = np.load(path, mmap_mode="r")
    assert _checks.check_images(mapped, (8, 8, 1)) is mapped
    images[555, 0, 0, 0] = np.inf
    images.flush()
    with pytest.raises(ValueError, match="image 555 holds NaN or infinite"):
        _checks.check_images(np.load(path, mmap_mode="r"), (8, 8, 1))


def test_images_of_complex_dtype():
    with pytest.raises(TypeError, match="real numbers"):
        _checks.check_images(np.zeros((1, 2, 2, 1), dtype=complex), (2, 2, 1))


@pytest.mark.parametrize("value", [-1, 1.5, None, True])
def test_positive_int_errors(value):
    with pytest.raises(ValueError, match="must be a positive integer. Received: n="):
        _checks.check_positive_int(value, "n")


def test_non_negative_float():
    assert _checks.check_non_negative_float(0, "momentum") == 0.0
    for bad in (-1e-9, float("inf"), "0.9", True):
        with pytest.raises(ValueError, match="momentum must be a finite number >= 0"):
            _checks.check_non_negative_float(bad, "momentum")


def test_model_file_checks(tmp_path):
    with pytest.raises(TypeError, match="path to a file"):
        _checks.check_model_file(3)
    with pytest.raises(FileNotFoundError, match="no model file found at '.*folder'"):
        _checks.check_model_file(str(tmp_path / "folder"))
    (tmp_path / "m.hdf5").write_bytes(b"x")
    assert _checks.check_model_file(tmp_path / "m.hdf5") == str(tmp_path / "m.hdf5")


@pytest.mark.parametrize(
    "documented, alias, expected", [(False, None, False), (True, None, True), (False, True, True), (True, True, True)]
)
def test_nesterov_spellings(documented, alias, expected):
    assert _checks.resolve_nesterov(documented, alias) is expected


def test_atomic_write_leaves_nothing_half_written(tmp_path):
    target = tmp_path / "table.csv"
    with _atomic.atomic_write(str(target)) as stream:
        stream.write("a,b\n")
    assert target.read_text() == "a,b\n"
    with pytest.raises(RuntimeError):
        with _atomic.atomic_write(str(target)) as stream:
            stream.write("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "a,b\n"
    assert os.listdir(tmp_path) == ["table.csv"]
    with pytest.raises(ValueError, match="mode must contain 'w'"):
        with _atomic.atomic_write(str(target), "r"):
            pass


@pytest.mark.parametrize("umask, expected", [(0o022, 0o644), (0o077, 0o600)], ids=["umask022", "umask077"])
@pytest.mark.parametrize("umask_source", ["proc", "fallback"])
def test_atomic_files_get_the_permissions_open_gives(tmp_path, umask, expected, umask_source):
    """A new file gets 0666 less the umask, a replaced file keeps its mode: as ``open(path, 'w')`` does."""
    code = f"""
        import json, os, stat
        from gamornet._utils import atomic as _atomic
        os.umask({umask:#o})
        if {umask_source!r} == "fallback":
            _atomic._STATUS_FILE = os.path.join(os.getcwd(), "no-such-status-file")
        umask_seen = _atomic.current_umask()
        assert os.umask({umask:#o}) == {umask:#o}, "current_umask changed the umask"
        with _atomic.atomic_write("table.csv") as stream:
            stream.write("a,b\\n")
        with _atomic.atomic_path("model.hdf5", suffix=".hdf5") as temporary:
            with open(temporary, "wb") as stream:
                stream.write(b"weights")
        with open("by_open.csv", "w") as stream:
            stream.write("a,b\\n")
        for name in ("shared.csv", "shared_by_open.csv"):
            os.close(os.open(name, os.O_CREAT | os.O_WRONLY, 0o640))
            os.chmod(name, 0o640)
        with _atomic.atomic_write("shared.csv") as stream:
            stream.write("a,b\\n")
        with open("shared_by_open.csv", "w") as stream:
            stream.write("a,b\\n")
        modes = {{name: stat.S_IMODE(os.stat(name).st_mode) for name in os.listdir(".")}}
        print(json.dumps({{"umask": umask_seen, "modes": modes}}))
    """
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=root)
    result = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                            cwd=tmp_path, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout)
    assert seen["umask"] == umask
    modes = seen["modes"]
    assert modes["by_open.csv"] == expected and modes["shared_by_open.csv"] == 0o640
    assert modes == {"table.csv": expected, "model.hdf5": expected, "by_open.csv": expected,
                     "shared.csv": 0o640, "shared_by_open.csv": 0o640}
