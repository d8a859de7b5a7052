"""The two pip packages, gamornet and gamornet-cpu, differ only in name and TensorFlow requirement."""

import email
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _metadata(script, tmp_path):
    """Build a package's metadata with its setup script; return (PKG-INFO message, Requires-Dist lines)."""
    out = tmp_path / script
    out.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "GAMORNET_VARIANT"}
    subprocess.run(
        [sys.executable, script, "-q", "egg_info", "--egg-base", str(out)],
        cwd=ROOT, check=True, capture_output=True, env=env,
    )
    (egg_info,) = out.iterdir()
    with open(egg_info / "PKG-INFO", encoding="utf-8") as stream:
        message = email.message_from_file(stream)
    return message, _requirements((egg_info / "requires.txt").read_text())


def _requirements(requires_txt):
    """Turn setuptools' requires.txt sections ([extra], [:marker], [extra:marker]) into 'req; marker' lines."""
    lines, extra, marker = [], "", ""
    for line in requires_txt.splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("["):
            extra, _, marker = line[1:-1].partition(":")
            continue
        markers = [m for m in (marker, f'extra == "{extra}"' if extra else "") if m]
        lines.append(line + ("; " + " and ".join(markers) if markers else ""))
    return lines


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("metadata")
    return _metadata("setup.py", tmp_path), _metadata("setup_cpu.py", tmp_path)


def _is_tensorflow(requirement):
    return requirement.split(";")[0].split("[")[0].split(">")[0].split("=")[0].strip().startswith("tensorflow")


def test_names_and_tensorflow_requirements(both):
    (gpu, gpu_requires), (cpu, cpu_requires) = both
    assert gpu["Name"] == "gamornet"
    assert cpu["Name"] == "gamornet-cpu"
    gpu_tf = [r for r in gpu_requires if _is_tensorflow(r)]
    cpu_tf = [r for r in cpu_requires if _is_tensorflow(r)]
    assert cpu_tf == ["tensorflow-cpu>=2.21"]
    assert sorted(gpu_tf) == sorted([
        'tensorflow[and-cuda]>=2.21; sys_platform == "linux"',
        'tensorflow>=2.21; sys_platform != "linux"',
    ])


def test_nothing_else_differs(both):
    (gpu, gpu_requires), (cpu, cpu_requires) = both
    gpu_items = {k: v for k, v in gpu.items() if k not in ("Name", "Requires-Dist")}
    cpu_items = {k: v for k, v in cpu.items() if k not in ("Name", "Requires-Dist")}
    assert gpu_items == cpu_items
    assert gpu.get_payload() == cpu.get_payload()
    gpu_rest = [r for r in gpu_requires if not _is_tensorflow(r)]
    cpu_rest = [r for r in cpu_requires if not _is_tensorflow(r)]
    assert gpu_rest == cpu_rest
    assert len(gpu_rest) == len(gpu_requires) - 2 and len(cpu_rest) == len(cpu_requires) - 1


def test_requirements_cover_the_design_card(both):
    (_, requires), _ = both
    core = [r for r in requires if "extra ==" not in r]
    names = {r.split(">")[0].split("[")[0].split(";")[0].strip().lower() for r in core}
    assert {"keras", "numpy", "h5py", "tflearn", "wget", "progressbar2"} <= names
    (gpu, _), _ = both
    assert gpu["Requires-Python"] == ">=3.10"


def test_citation_file_names_this_version_and_the_paper():
    import re

    from gamornet._version import __version__

    with open(os.path.join(ROOT, "CITATION.cff"), encoding="utf-8") as stream:
        text = stream.read()
    assert re.search(r"^cff-version: 1\.2\.0$", text, re.M)
    assert re.search(r"^version: (\S+)$", text, re.M).group(1) == __version__
    assert "doi: 10.3847/1538-4357/ab8a47" in text and "preferred-citation:" in text
