"""The documentation builds with warnings as errors, and its code examples pass as doctests.

Sphinx runs in a subprocess, as ``make docs`` runs it, so the pages are built
from the installed package and the doctests cannot leak state into this
process. The HTML and doctest builders share one doctree folder, so the pages
are read (and the backends imported by autodoc) only once.
"""

import os
import re
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = os.path.join(ROOT, "docs")

#: The pages the issue asks for, by source name.
PAGES = ("index", "getting_started", "tutorials", "handbook", "uncertainty", "api", "cli", "architecture", "faq",
         "attribution")
API_PAGES = ("api/keras_module", "api/tflearn_module", "api/predictor", "api/classify", "api/metrics",
             "api/model_card", "api/simulate", "api/preprocess", "api/demo", "api/io", "api/published", "api/formats",
             "api/presets", "api/errors", "api/calibration", "api/uncertainty")

def _sphinx(builder, source, output, doctrees, strict=True):
    command = [sys.executable, "-m", "sphinx", "-b", builder, "-d", str(doctrees), "-q"]
    if strict:
        command += ["-W", "--keep-going"]
    command += [str(source), str(output)]
    env = dict(os.environ, COLUMNS="88")
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(html folder, doctree folder) of one strict HTML build of docs/."""
    base = tmp_path_factory.mktemp("docs")
    html, doctrees = base / "html", base / "doctrees"
    result = _sphinx("html", DOCS, html, doctrees)
    assert result.returncode == 0, f"sphinx html failed:\n{result.stdout}\n{result.stderr}"
    assert "WARNING" not in result.stderr, result.stderr
    return html, doctrees


def _read(html, page):
    with open(html / f"{page}.html", encoding="utf-8") as stream:
        return stream.read()


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
    assert 'id="gamornet.classify.classify"' in _read(html, "api/classify")
    assert 'id="gamornet.models.fetch"' in _read(html, "api/published")
    assert 'id="gamornet.predictor.load_predictor"' in _read(html, "api/predictor")


def test_cli_page_holds_the_help_of_every_subcommand(built):
    from gamornet.cli import build_parser

    html, _ = built
    page = _read(html, "cli")
    subcommands = [action for action in build_parser()._actions if hasattr(action, "choices") and action.choices]
    names = list(subcommands[0].choices) if subcommands else []
    assert "usage: gamornet" in page
    for name in names:
        assert f"usage: gamornet {name}" in page, name


def test_handbook_tables_come_from_the_registry(built):
    from gamornet import _registry

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
    result = _sphinx("doctest", DOCS, tmp_path / "doctest", doctrees)
    tests, failures, text = _doctest_summary(tmp_path / "doctest")
    assert result.returncode == 0, f"{result.stdout}\n{result.stderr}\n{text}"
    assert failures == 0
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
    result = _sphinx("doctest", source, tmp_path / "out", tmp_path / "doctrees", strict=False)
    tests, failures, text = _doctest_summary(tmp_path / "out")
    assert result.returncode != 0
    assert failures == 1 and tests > 1, text
    assert "['disk', 'indeterminate', 'bulge']" in text
