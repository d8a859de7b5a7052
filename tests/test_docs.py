"""The documentation builds with warnings as errors, and its code examples pass as doctests.

Sphinx runs in a subprocess, as ``make docs`` runs it, so the pages are built
from the installed package and the doctests cannot leak state into this
process. The HTML and doctest builders share one doctree folder, so the pages
are read (and the backends imported by autodoc) only once.

A build is judged by Sphinx's own verdict: its exit status under ``-W`` and
the warnings it writes to its warning file (``-w``). Its standard error is not
read: the libraries the pages import write their own lines there (TensorFlow
does on some CPUs), and those are not Sphinx warnings.
"""

import os
import pathlib
import re
import shutil
import subprocess
import sys

import pytest

#: The whole docs build, its doctests included, runs with oneDNN on and off (see conftest.py).
pytestmark = pytest.mark.numeric

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")

#: The pages the issue asks for, by source name.
PAGES = ("index", "getting_started", "tutorials", "survey_images", "training", "handbook", "uncertainty", "api",
         "cli", "speed", "cluster", "scaling", "architecture", "faq", "attribution")
API_PAGES = ("api/keras_module", "api/tflearn_module", "api/predictor", "api/classify", "api/metrics", "api/model_card",
             "api/simulate", "api/preprocess", "api/demo", "api/io", "api/cutouts", "api/distributed", "api/published",
             "api/formats", "api/presets", "api/errors", "api/calibration", "api/uncertainty", "api/precision",
             "api/training")

def _sphinx(builder, source, output, doctrees, strict=True):
    """Run Sphinx; return (its completed process, the text of its warning file)."""
    warning_file = pathlib.Path(f"{output}-warnings.txt")
    command = [sys.executable, "-m", "sphinx", "-b", builder, "-d", str(doctrees), "-q", "-w", str(warning_file)]
    if strict:
        command += ["-W", "--keep-going"]
    command += [str(source), str(output)]
    env = dict(os.environ, COLUMNS="88")
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    warnings = warning_file.read_text(encoding="utf-8") if warning_file.is_file() else ""
    return result, warnings


def _check_clean(result, warnings):
    """Fail unless Sphinx succeeded and warned of nothing (its standard error is not read)."""
    assert result.returncode == 0 and warnings.strip() == "", (
        f"sphinx failed (exit status {result.returncode}) or warned:\n{warnings}\n{result.stdout}\n{result.stderr}"
    )


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(html folder, doctree folder) of one strict HTML build of docs/."""
    base = tmp_path_factory.mktemp("docs")
    html, doctrees = base / "html", base / "doctrees"
    _check_clean(*_sphinx("html", DOCS, html, doctrees))
    return html, doctrees


def _read(html, page):
    with open(html / f"{page}.html", encoding="utf-8") as stream:
        return stream.read()


#: conf.py of the small builds below: it writes to standard error as a library the pages import may.
_NOISY_CONF = """
import os
os.write(2, b"WARNING: a line that a library writes to standard error, not a Sphinx warning\\n")
project = "check"
"""


def _small_build(folder, page):
    source = folder / "source"
    source.mkdir(parents=True)
    (source / "conf.py").write_text(_NOISY_CONF)
    (source / "index.rst").write_text(page)
    return _sphinx("html", source, folder / "html", folder / "doctrees")


def test_a_sphinx_warning_fails_the_build_and_a_library_line_does_not(tmp_path):
    page = "Title\n=====\n\nSee :ref:`{}`.\n\n.. _target:\n\nSection\n-------\n\nText.\n"
    result, warnings = _small_build(tmp_path / "clean", page.format("target"))
    assert "a line that a library writes" in result.stderr
    _check_clean(result, warnings)
    result, warnings = _small_build(tmp_path / "broken", page.format("no-such-target"))
    assert re.search(r"index\.rst:4: WARNING: undefined label: '?no-such-target", warnings), warnings
    with pytest.raises(AssertionError, match="undefined label"):
        _check_clean(result, warnings)


def test_every_page_is_built(built):
    html, _ = built
    for page in PAGES + API_PAGES:
        assert (html / f"{page}.html").is_file(), page
    index = _read(html, "index")
    for page in PAGES[1:]:
        assert f'href="{page}.html"' in index, f"{page} is not in the table of contents"


def test_api_pages_document_the_public_functions(built):
    html, _ = built
    keras_page = _read(html, "api/keras_module")
    for name in ("gamornet_predict_keras", "gamornet_train_keras", "gamornet_tl_keras"):
        assert f'id="gamornet.keras_module.{name}"' in keras_page, name
    # napoleon rendered the numpydoc sections into field lists.
    assert "Parameters" in keras_page and "Returns" in keras_page and "Raises" in keras_page
    tflearn_page = _read(html, "api/tflearn_module")
    for name in ("gamornet_predict_tflearn", "gamornet_train_tflearn", "gamornet_tl_tflearn"):
        assert f'id="gamornet.tflearn_module.{name}"' in tflearn_page, name
    assert 'id="gamornet.science.classify.classify"' in _read(html, "api/classify")
    assert 'id="gamornet.models.fetch"' in _read(html, "api/published")
    assert 'id="gamornet.inference.predictor.load_predictor"' in _read(html, "api/predictor")
PAGES = ("index", "getting_started", "tutorials", "survey_images", "handbook", "uncertainty", "api", "cli",
         "speed", "cluster", "scaling", "architecture", "faq", "attribution")
API_PAGES = ("api/keras_module", "api/tflearn_module", "api/predictor", "api/classify", "api/simulate",
             "api/preprocess", "api/io", "api/cutouts", "api/distributed", "api/published", "api/formats",
             "api/presets", "api/errors", "api/calibration", "api/uncertainty", "api/precision")


def test_cli_page_holds_the_help_of_every_subcommand(built):
    from gamornet.cli.main import build_parser

    html, _ = built
    page = _read(html, "cli")
    subcommands = [action for action in build_parser()._actions if hasattr(action, "choices") and action.choices]
    names = list(subcommands[0].choices) if subcommands else []
    assert "usage: gamornet" in page
    for name in names:
        assert f"usage: gamornet {name}" in page, name


def test_handbook_tables_come_from_the_registry(built):
    from gamornet.models import _registry

    html, _ = built
    page = _read(html, "handbook")
    for entry in _registry.PUBLISHED_MODELS + _registry.PUBLISHED_FILES:
        for path in getattr(entry, "files", (getattr(entry, "path", None),)):
            assert path in page, path
    for figure in ("99.72%", "95.25%", "77.88%", "78.62%", "46%", "39%"):
        assert figure in page


def _doctest_summary(output_folder):
    with open(output_folder / "output.txt", encoding="utf-8") as stream:
        text = stream.read()
    tests = int(re.search(r"^\s*(\d+) tests$", text, re.M).group(1))
    failures = int(re.search(r"^\s*(\d+) failures? in tests$", text, re.M).group(1))
    return tests, failures, text


def test_doctests_pass(built, tmp_path):
    _, doctrees = built
    result, warnings = _sphinx("doctest", DOCS, tmp_path / "doctest", doctrees)
    tests, failures, text = _doctest_summary(tmp_path / "doctest")
    assert failures == 0, text
    _check_clean(result, warnings)
    # Examples on the handbook, API, getting-started and attribution pages.
    assert tests >= 30, text


def test_a_wrong_example_fails_the_doctests(tmp_path):
    """The doctest run is not vacuous: a page whose example is wrong fails it."""
    source = tmp_path / "source"
    source.mkdir()
    shutil.copy(os.path.join(DOCS, "conf.py"), source / "conf.py")
    shutil.copytree(os.path.join(DOCS, "_ext"), source / "_ext")
    with open(os.path.join(DOCS, "handbook.rst"), encoding="utf-8") as stream:
        page = stream.read()
    right = "   >>> classify(probabilities, \"keras_SDSS\").tolist()\n   ['disk', 'indeterminate', 'indeterminate']"
    assert right in page
    (source / "index.rst").write_text(page.replace(right, right.replace("'indeterminate']", "'bulge']")))
    result, _ = _sphinx("doctest", source, tmp_path / "out", tmp_path / "doctrees", strict=False)
    tests, failures, text = _doctest_summary(tmp_path / "out")
    assert result.returncode != 0
    assert failures == 1 and tests > 1, text
    assert "['disk', 'indeterminate', 'bulge']" in text


def test_nothing_cites_the_developer_documents():
    """The package, its docs and its notebooks cite the paper, the handbook or our pages, never SPEC / STYLE."""
    cited = re.compile(r"\bSPEC\b|\bSTYLE\.md\b")
    found = []
    for folder in ("gamornet", "docs", "tutorials"):
        for directory, subfolders, names in os.walk(os.path.join(ROOT, folder)):
            subfolders[:] = [name for name in subfolders if name not in ("_build", "__pycache__")]
            for name in names:
                path = os.path.join(directory, name)
                with open(path, "rb") as stream:
                    text = stream.read().decode("utf-8", errors="replace")
                found += [f"{os.path.relpath(path, ROOT)}: {line.strip()}" for line in text.splitlines()
                          if cited.search(line)]
    assert found == []
