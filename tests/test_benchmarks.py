"""Every script in benchmarks/ runs to the end on tiny sizes.

The benchmarks are how the project's performance claims are measured; they
import the library's internals, so a change there can break one silently
(two were found broken this way). Each runs in a fresh process, from an empty
working folder that must stay empty: a benchmark writes only to temporary
folders.
"""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCHMARKS = os.path.join(ROOT, "benchmarks")

#: The smoke-run arguments of each benchmark, and a line its report must print.
SMOKE_RUNS = {
    "augmentation_shift.py": (["--quick"], "gap to in-domain"),
    "cutout_throughput.py": (["--quick"], "load average at end"),
    "distributed.py": (["--quick"], "(d) / first run"),
    "input_identity.py": (["--quick"], "added by the identity"),
    "mc_dropout.py": (["--quick"], "target (b) >= 0.5 x (a)"),
    "model_reuse.py": (["--repeats", "1", "--input-shape", "CANDELS"], "second / first"),
    "other_simulator.py": (["--n", "6", "--size", "32"], "integrated S/N"),
    "own_simulator.py": (["--quick"], "(c) gamornet predict on raw FITS"),
    "precision.py": (["--quick", "--profile"], "longest layers"),
    "predict_throughput.py": (["--quick"], "load average at end"),
    "reference_agreement.py": ([], "CANDELS"),
    "training_throughput.py": (["--quick", "--no-rss"], "(a) compiled step, tensors made before"),
}


def test_every_benchmark_has_a_smoke_run():
    scripts = {name for name in os.listdir(BENCHMARKS) if name.endswith(".py")}
    assert scripts == set(SMOKE_RUNS), "add the new benchmark to SMOKE_RUNS (or remove the stale entry)"


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(SMOKE_RUNS))
def test_benchmark_smoke_run(script, tmp_path):
    arguments, expected = SMOKE_RUNS[script]
    environment = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
                       MPLBACKEND="Agg", TF_CPP_MIN_LOG_LEVEL="2")  # fmt: skip
    finished = subprocess.run([sys.executable, os.path.join(BENCHMARKS, script), *arguments], cwd=tmp_path,
                              env=environment, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert finished.returncode == 0, f"{script} failed:\n{finished.stdout[-3000:]}\n{finished.stderr[-3000:]}"
    assert expected in finished.stdout, finished.stdout[-3000:]
    assert os.listdir(tmp_path) == [], f"{script} wrote into the working folder: {os.listdir(tmp_path)}"
