"""TensorFlow's start-up log lines stay hidden unless asked for (gamornet._utils.tf_logging, ``gamornet --verbose``).

The helper is checked in fresh interpreters with small modules that write to
file descriptor 2, fail or crash while imported, as a C++ library does; then
``gamornet predict`` is run with oneDNN switched on, where TensorFlow 2.21
writes its start-up lines, and every line of its standard error must be one
of gamornet's own. TensorFlow's text itself is never asserted on.
"""

import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import reference
from legacy_files import write_keras2_file

from gamornet._utils import tf_logging as _tf_logging

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CANDELS = (83, 83, 1)

#: What a library writes to file descriptor 2 while it loads, in the helper's tests.
NOISE = "written to file descriptor 2 while the module loads"

#: gamornet's own lines on standard error: its messages and its progress bars.
OURS = re.compile(r"^(gamornet( [a-z]+)?: |Classifying: )")


def _run(code, tmp_path, module_source, **environment):
    """Run ``code`` in a fresh interpreter that can import ``helper_module`` (``module_source``)."""
    (tmp_path / "helper_module.py").write_text(textwrap.dedent(module_source))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tmp_path), ROOT]))
    env.pop(_tf_logging.ENVIRONMENT_VARIABLE, None)
    env.update(environment)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=120, env=env)


_NOISY_MODULE = f"""
    import os, sys, threading
    os.write(2, b"{NOISE}\\n")
    print("Python's sys.stderr works during the import", file=sys.stderr)
    thread = threading.Thread(target=lambda: print("so does another thread's", file=sys.stderr))
    thread.start()
    thread.join()
"""


def test_quiet_import_hides_descriptor_2_only_and_restores_it_exactly(tmp_path):
    code = """
        import os, sys
        from gamornet._utils.tf_logging import quiet_import
        before, stream, descriptors = os.fstat(2), sys.stderr, sorted(os.listdir("/proc/self/fd"))
        module = quiet_import("helper_module")
        after = os.fstat(2)
        assert (after.st_dev, after.st_ino) == (before.st_dev, before.st_ino), "descriptor 2 moved"
        assert sys.stderr is stream, "sys.stderr was not restored"
        assert sorted(os.listdir("/proc/self/fd")) == descriptors, "a file descriptor leaked"
        assert quiet_import("helper_module") is module
        os.write(2, b"descriptor 2 works after the import\\n")
        print("and so does sys.stderr", file=sys.stderr)
    """
    result = _run(code, tmp_path, _NOISY_MODULE)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == [
        "Python's sys.stderr works during the import",
        "so does another thread's",
        "descriptor 2 works after the import",
        "and so does sys.stderr",
    ]


@pytest.mark.parametrize("value, shown", [("1", True), ("yes", True), ("0", False), ("", False)])
def test_the_environment_variable_shows_the_lines(tmp_path, value, shown):
    code = "from gamornet._utils.tf_logging import quiet_import; quiet_import('helper_module')"
    result = _run(code, tmp_path, _NOISY_MODULE, **{_tf_logging.ENVIRONMENT_VARIABLE: value})
    assert result.returncode == 0, result.stderr
    assert (NOISE in result.stderr) is shown
    assert "Python's sys.stderr works during the import" in result.stderr


def test_what_a_failing_import_wrote_is_shown_with_its_error(tmp_path):
    module = f"""
        import os
        os.write(2, b"{NOISE}: the reason it fails\\n")
        raise ImportError("the library cannot load")
    """
    code = """
        import os
        from gamornet._utils.tf_logging import quiet_import
        try:
            quiet_import("helper_module")
        except ImportError as error:
            print(f"caught: {error}")
        os.write(2, b"descriptor 2 restored\\n")
    """
    result = _run(code, tmp_path, module)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "caught: the library cannot load"
    assert result.stderr.splitlines() == [f"{NOISE}: the reason it fails", "descriptor 2 restored"]


def test_a_crash_during_the_import_is_not_silent(tmp_path):
    module = f"""
        import os
        os.write(2, b"{NOISE}\\n")
        os.abort()
    """
    code = "from gamornet._utils.tf_logging import quiet_import; quiet_import('helper_module')"
    result = _run(code, tmp_path, module)
    assert result.returncode != 0
    assert "Fatal Python error" in result.stderr
    assert "quiet_import" in result.stderr and "helper_module" in result.stderr


# --------------------------------------------------------------------------- gamornet predict, oneDNN on


@pytest.fixture(scope="module")
def tiny_catalogue(tmp_path_factory):
    """(folder, model file, images.npy) of three CANDELS images and a Keras 2 model file."""
    folder = tmp_path_factory.mktemp("catalogue")
    images = reference.galaxy_images(3, CANDELS, seed=1)
    rng = np.random.default_rng(2)
    # Only the log lines matter here, not the probabilities: any weights will do.
    weights = [(0.01 * rng.standard_normal(kernel).astype(np.float32), np.zeros(bias, np.float32))
               for kernel, bias in reference.weight_shapes(CANDELS)]
    model = write_keras2_file(str(folder / "model.hdf5"), weights)
    np.save(folder / "images.npy", images[..., 0])
    return folder, model, str(folder / "images.npy")


def _onednn_environment(**environment):
    """The environment of a fresh gamornet process with oneDNN on, where TensorFlow writes its start-up lines."""
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS="1", PYTHONPATH=ROOT)
    # TensorFlow's own filter, as a user who never heard of it has it.
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    env.pop(_tf_logging.ENVIRONMENT_VARIABLE, None)
    env.update(environment)
    return env


def _predict(tiny_catalogue, *options, **environment):
    """Standard error's lines of ``gamornet [options] predict`` run with oneDNN on."""
    folder, model, images = tiny_catalogue
    env = _onednn_environment(**environment)
    command = [sys.executable, "-m", "gamornet.cli.main", *options, "predict", images, "--model", model,
               "--input-shape", "CANDELS", "--output", str(folder / "predictions.csv")]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env, cwd=folder)
    assert result.returncode == 0, result.stderr
    return [line for line in re.split(r"[\r\n]+", result.stderr) if line.strip()]


def _not_ours(lines):
    return [line for line in lines if not OURS.match(line)]


@pytest.mark.slow
def test_gamornet_predict_shows_only_its_own_lines_unless_asked(tiny_catalogue):
    quiet = _predict(tiny_catalogue)
    assert _not_ours(quiet) == [], quiet
    assert any(line.startswith("gamornet predict: classified 3 images") for line in quiet), quiet
    verbose = _predict(tiny_catalogue, "--verbose")
    assert len(_not_ours(verbose)) > 0, verbose


def test_verbose_holds_for_the_command_only(monkeypatch, tmp_path):
    """``--verbose`` sets the variable while the command runs (so child processes inherit it), then restores it."""
    from gamornet.cli import main as cli

    seen = []
    monkeypatch.delenv(_tf_logging.ENVIRONMENT_VARIABLE, raising=False)
    monkeypatch.setattr(cli, "_SUBCOMMAND_MODULES", ())
    parser = cli.build_parser()
    parser.set_defaults(handler=lambda args: seen.append(_tf_logging.tensorflow_logs_shown()), command_name="x")
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    assert cli.main(["--verbose"]) == 0 and cli.main([]) == 0
    assert seen == [True, False]
    assert _tf_logging.ENVIRONMENT_VARIABLE not in os.environ


@pytest.mark.slow
def test_the_demo_loads_tensorflow_quietly(tmp_path):
    """The demo's first use of Keras (its learning-rate schedule, before training) goes through the quiet import."""
    env = _onednn_environment()
    code = ("from gamornet.demo.run import DemoConfig, _learning_rate\n"
            "schedule = _learning_rate(DemoConfig(), 100)\n"
            "print(type(schedule).__name__, float(schedule(150)) > 0)")  # fmt: skip
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env,
                            cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["CosineDecay", "True"]
    assert [line for line in result.stderr.splitlines() if line.strip()] == []
