"""gamornet.survey.distributed: sharded, resumable prediction on a real Dask LocalCluster (processes on 127.0.0.1)."""

import csv
import dataclasses
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from astropy.io import fits

import reference
from legacy_files import write_keras2_file

pytest.importorskip("distributed")
pq = pytest.importorskip("pyarrow.parquet")
pd = pytest.importorskip("pandas")

from gamornet.survey import distributed  # noqa: E402
from gamornet.science.classify import classify, resolve_thresholds  # noqa: E402
from gamornet.cli.main import main  # noqa: E402
from gamornet.errors import BadInputError, FolderInUseError, ModelFileError, ResumeMismatchError  # noqa: E402

SHAPE = (32, 32, 1)
THRESHOLDS = (0.6, 0.6)
# Partitions: 96 + 80 (cube) + 6 files = 182 images in partitions of 20.
PARTITION_SIZE = 20
CLI_OPTIONS = ["--input-shape", "32,32,1", "--thresholds", "0.6,0.6", "--no-progress"]


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """A model file with calibrated weights, inputs of every kind, and the numpy reference of a few images."""
    folder = tmp_path_factory.mktemp("distributed")
    images = reference.galaxy_images(182, SHAPE, seed=7)
    weights = reference.calibrated_weights(SHAPE, images[:3], reference.lrn_keras, seed=2)
    model = write_keras2_file(str(folder / "model.hdf5"), weights, layout="weights")
    stack = str(folder / "stack.npy")
    np.save(stack, images[:96])
    cube = str(folder / "cube.fits")  # large enough to be opened and split across partitions
    fits.PrimaryHDU(images[96:176, :, :, 0]).writeto(cube)
    (folder / "cutouts").mkdir()
    for index in range(6):
        fits.PrimaryHDU(images[176 + index, :, :, 0]).writeto(str(folder / "cutouts" / f"g{index}.fits"))
    inputs = [stack, cube, str(folder / "cutouts")]
    sources = [f"{stack}[{i}]" for i in range(96)] + [f"{cube}[{i}]" for i in range(80)]
    sources += [str(folder / "cutouts" / f"g{i}.fits") for i in range(6)]
    checked = [0, 95, 96, 181]  # the numpy reference is slow: a few images of each kind
    expected = dict(zip([sources[i] for i in checked], reference.forward(images[checked], weights)))
    return {"folder": folder, "model": model, "inputs": inputs, "sources": sources, "expected": expected,
            "images": images}


@pytest.fixture(scope="module")
def single_process(case):
    """The table of plain `gamornet predict` (one process, no Dask), which must not import Dask."""
    output = str(case["folder"] / "single.csv")
    code = (
        "import sys\n"
        "from gamornet.cli.main import main\n"
        "status = main(sys.argv[1:])\n"
        "imported = sorted(m for m in ('dask', 'distributed') if m in sys.modules)\n"
        "sys.exit(status or (3 if imported else 0))\n"
    )
    command = [sys.executable, "-c", code, "predict", *case["inputs"], "--model", case["model"], *CLI_OPTIONS,
               "--output", output]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    with open(output, newline="") as stream:
        rows = list(csv.DictReader(stream))
    return {row["source"]: row for row in rows}, [row["source"] for row in rows]


@pytest.fixture(scope="module")
def client():
    """One LocalCluster of two worker processes on loopback, as ``client=2`` (and --workers 2) starts it.

    Shared by the tests of this module: each worker process imports TensorFlow
    and builds the model once, which costs seconds.
    """
    with distributed._connected(2) as dask_client:
        assert dask_client.scheduler.address.startswith("tcp://127.0.0.1:")
        assert sorted(dask_client.nthreads().values()) == [1, 1]
        yield dask_client
    assert dask_client.status == "closed"


def run(case, output, client, **options):
    options = {"input_shape": SHAPE, "thresholds": THRESHOLDS, **options}
    return distributed.predict_catalogue(case["inputs"], case["model"], str(output), client=client,
                                         partition_size=options.pop("partition_size", PARTITION_SIZE), **options)


def read_manifest(folder):
    with open(os.path.join(folder, distributed.MANIFEST_NAME)) as stream:
        return json.load(stream)


def parts(folder):
    return sorted(name for name in os.listdir(folder) if name.startswith("part-"))


def check_against_single_process(table, single_process, expected):
    """Row for row by source, to 1e-6, as the one-process table; and the numpy reference to 1e-4."""
    rows, order = single_process
    assert list(table["source"]) == order  # every input once, in input order
    for source, p_disk, p_indet, p_bulge, label in zip(table["source"], table["p_disk"], table["p_indet"],
                                                        table["p_bulge"], table["class"]):
        row = rows[source]
        np.testing.assert_allclose([p_disk, p_indet, p_bulge],
                                   [float(row["p_disk"]), float(row["p_indet"]), float(row["p_bulge"])], atol=1e-6)
        assert label == row["class"]
    for source, probabilities in expected.items():
        index = order.index(source)
        np.testing.assert_allclose(table.loc[index, ["p_disk", "p_indet", "p_bulge"]].to_numpy(dtype=float),
                                   probabilities, atol=1e-4)


# --------------------------------------------------------------------------- the plan


def test_partitions_split_arrays_and_cubes_and_group_files(case):
    partitions = distributed.plan_partitions(case["inputs"], SHAPE, PARTITION_SIZE)
    stack, cube, folder = case["inputs"]
    assert [partition.images for partition in partitions] == [20] * 9 + [2]
    assert partitions[0].inputs == (f"{stack}[0:20]",)
    assert partitions[4].inputs == (f"{stack}[80:96]", f"{cube}[0:4]")
    assert partitions[8].inputs == (f"{cube}[64:80]",) + tuple(f"{folder}/g{i}.fits" for i in range(4))
    assert partitions[9].inputs == tuple(f"{folder}/g{i}.fits" for i in (4, 5))
    # Each file once, with its size and modification time (what a rerun compares), and its name as given.
    status = os.stat(stack)
    assert partitions[4].files == ((stack, stack), (cube, cube))
    assert partitions[4].identity[0] == [status.st_size, status.st_mtime_ns]
    relative = os.path.relpath(stack)
    assert distributed.plan_partitions([relative], SHAPE, PARTITION_SIZE)[0].files == ((stack, relative),)
    again = distributed.plan_partitions(case["inputs"], SHAPE, PARTITION_SIZE)
    assert [partition.id for partition in again] == [partition.id for partition in partitions]
    assert len({partition.id for partition in partitions}) == 10
    assert partitions[3].file_name == f"part-000003-{partitions[3].id}.parquet"
    # A range given by the user is cut further; a small cube (not opened) counts as one image.
    small = case["folder"] / "small_cube.fits"
    fits.PrimaryHDU(np.ones((3, 32, 32), np.float32)).writeto(str(small))
    plan = distributed.plan_partitions([f"{stack}[10:55]", str(small)], SHAPE, 20)
    assert [partition.inputs for partition in plan] == [(f"{stack}[10:30]",), (f"{stack}[30:50]",),
                                                        (f"{stack}[50:55]", str(small))]
    assert [partition.images for partition in plan] == [20, 20, 6]


# --------------------------------------------------------------------------- output, provenance, reading back


def test_parquet_output_equals_single_process_output(tmp_path, case, single_process, client):
    output = tmp_path / "run.parquet"
    assert run(case, output, client) == str(output)
    assert parts(output) == sorted(partition.file_name for partition in
                                   distributed.plan_partitions(case["inputs"], SHAPE, PARTITION_SIZE))
    assert sorted(name for name in os.listdir(output) if not name.startswith("part-")) == [
        "_common_metadata", "_manifest.json", "_metadata"]
    table = pd.read_parquet(output)
    assert list(table.columns) == ["source", "p_disk", "p_indet", "p_bulge", "class"]
    assert str(table["p_disk"].dtype) == "float32"
    check_against_single_process(table, single_process, case["expected"])
    probabilities = table[["p_disk", "p_indet", "p_bulge"]].to_numpy()
    assert list(table["class"]) == classify(probabilities, resolve_thresholds(THRESHOLDS)).tolist()

    # Each worker built the model once and kept it: its count of loads never grew from task to task.
    entries = read_manifest(output)["finished"].values()
    loads = {}
    for entry in entries:
        loads.setdefault(entry["worker"], set()).add(entry["worker_model_loads"])
    assert len(entries) == 10 > len(loads) and all(len(values) == 1 for values in loads.values())


def test_provenance_and_other_readers(tmp_path, case, client):
    output = tmp_path / "run.parquet"
    run(case, output, client, partition_size=100)
    provenance = distributed.read_provenance(output)
    import gamornet
    from gamornet import models

    assert provenance["gamornet_version"] == gamornet.__version__
    assert provenance["model"] == case["model"] and provenance["backend"] == "keras"
    assert provenance["model_sha256"] == models.model_sha256(case["model"], "keras")
    assert provenance["input_shape"] == [32, 32, 1] and provenance["partition_size"] == 100
    assert provenance["thresholds"] == {"disk": 0.6, "bulge": 0.6, "disk_must_lead": False}
    assert provenance["predictor_options"] == {} and "command_line" in provenance
    assert distributed.read_provenance(output / parts(output)[0])["model_sha256"] == provenance["model_sha256"]
    # pyarrow (the folder, through _metadata), astropy (a part), Dask (the folder).
    import pyarrow as pa

    table = pq.read_table(output)
    assert table.num_rows == 182 and table.schema.field("p_bulge").type == pa.float32()
    from astropy.table import Table

    with pytest.warns(UserWarning, match=r"table::len::(source|class)"):
        part = Table.read(output / parts(output)[0], format="parquet")
    assert len(part) == 100 and part.colnames == ["source", "p_disk", "p_indet", "p_bulge", "class"]
    import dask.dataframe as dd

    assert list(dd.read_parquet(str(output)).compute()["source"]) == list(table["source"].to_pylist())
    pq.write_table(table.replace_schema_metadata(None), str(tmp_path / "plain.parquet"))
    with pytest.raises(ValueError, match="holds no gamornet provenance"):
        distributed.read_provenance(tmp_path / "plain.parquet")


def test_csv_and_fits_outputs_are_concatenated_from_the_parts(tmp_path, case, single_process, client):
    fits_output = tmp_path / "run.fits"
    run(case, fits_output, client, partition_size=64)
    assert not os.path.exists(str(fits_output) + ".parts")
    from astropy.table import Table

    table = Table.read(fits_output)
    table.convert_bytestring_to_unicode()
    check_against_single_process(table.to_pandas(), single_process, case["expected"])
    assert table.meta["THRESH"] == "p_disk >= 0.6, p_bulge >= 0.6"


def test_the_command_line(tmp_path, case, single_process, client, capsys):
    """--scheduler runs on an existing cluster; a .csv output is concatenated; --workers N resumes a run."""
    command = ["predict", *case["inputs"], "--model", case["model"], *CLI_OPTIONS, "--partition-size", "64"]
    output = str(tmp_path / "run.csv")
    assert main(command + ["--output", output, "--scheduler", client.scheduler.address]) == 0
    err = capsys.readouterr().err
    assert "classified 182 images" in err and "3 partitions: 3 classified now" in err
    assert os.listdir(tmp_path) == ["run.csv"]
    check_against_single_process(pd.read_csv(output), single_process, case["expected"])

    folder = tmp_path / "run.parquet"
    assert main(command + ["--output", str(folder), "--scheduler", client.scheduler.address]) == 0
    assert read_manifest(folder)["provenance"]["command_line"] == ["gamornet"] + command + [
        "--output", str(folder), "--scheduler", client.scheduler.address]
    capsys.readouterr()
    # Everything is done: --workers starts no cluster at all (it would take seconds).
    assert main(command + ["--output", str(folder), "--workers", "1"]) == 0
    assert "3 partitions: 0 classified now, 3 finished by an earlier run" in capsys.readouterr().err


# --------------------------------------------------------------------------- resume


def _interrupt_when(condition, stop):
    """Send SIGINT to this process (Ctrl-C) once ``condition()`` holds."""
    def watch():
        while not stop.is_set():
            if condition():
                os.kill(os.getpid(), signal.SIGINT)
                return
            time.sleep(0.005)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def _executing(dask_worker):
    return len(dask_worker.state.executing)


def _wait_until_idle(client):
    """Tasks cancelled while they ran still finish on their workers (Dask cannot stop them): wait for them."""
    deadline = time.monotonic() + 60
    while any(client.run(_executing).values()):
        assert time.monotonic() < deadline
        time.sleep(0.05)


def test_an_interrupted_run_resumes_with_the_missing_partitions_only(tmp_path, case, single_process, client):
    output = tmp_path / "run.parquet"
    stop = threading.Event()

    def ctrl_c(signum, frame):  # a KeyboardInterrupt only while the run runs, never in pytest itself
        if not stop.is_set():
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, ctrl_c)
    try:
        _interrupt_when(lambda: os.path.isdir(output) and parts(output), stop)
        with pytest.raises(KeyboardInterrupt) as stopped:
            run(case, output, client, partition_size=5)
    finally:
        stop.set()
        signal.signal(signal.SIGINT, previous)
    assert f"partitions are finished in {str(output)!r}; run the same command again" in stopped.value.kept
    _wait_until_idle(client)
    # Only finished parts and the manifest: no temporary file, no _metadata (the data set is not complete).
    names = os.listdir(output)
    assert not [name for name in names if name.startswith(".tmp-")] and "_metadata" not in names
    # The manifest lists finished parts (those finished at the very moment of the stop are found on disk later).
    first = {name: os.stat(output / name).st_mtime_ns for name in parts(output)}
    assert 0 < len(first) < 37
    assert {entry["file"] for entry in read_manifest(output)["finished"].values()} <= set(first)
    for name in first:
        assert pq.read_metadata(output / name).num_rows == 5

    run(case, output, client, partition_size=5)
    manifest = read_manifest(output)
    assert len(manifest["runs"]) == 2 and manifest["runs"][1]["partitions_done"] == 37 - len(first)
    for entry in manifest["finished"].values():
        if entry["file"] in first:  # done before the stop: neither redone nor rewritten
            assert entry["run"] in (1, None) and os.stat(output / entry["file"]).st_mtime_ns == first[entry["file"]]
        else:
            assert entry["run"] == 2
    check_against_single_process(pd.read_parquet(output), single_process, case["expected"])

    # A third run finds everything done: no task, no cluster, nothing rewritten.
    metadata_time = os.stat(output / "_metadata").st_mtime_ns
    assert run(case, output, "tcp://127.0.0.1:1", partition_size=5) == str(output)
    assert os.stat(output / "_metadata").st_mtime_ns == metadata_time
    assert len(read_manifest(output)["runs"]) == 2


def test_other_settings_or_inputs_on_an_existing_output_are_refused(tmp_path, case, client):
    output = tmp_path / "run.parquet"
    run(case, output, client, partition_size=100)
    other_model = tmp_path / "other.hdf5"
    shutil.copyfile(case["model"], other_model)
    with open(other_model, "ab") as stream:
        stream.write(b"\0")
    refusals = [
        (dict(thresholds=(0.7, 0.7)), r"made with another model or other settings: thresholds: \{'disk': 0.6, "
                                      r"'bulge': 0.6, 'disk_must_lead': False\} there, \{'disk': 0.7"),
        (dict(partition_size=50), "partition_size: 100 there, 50 now"),
    ]
    for options, message in refusals:
        with pytest.raises(ResumeMismatchError, match=message):
            run(case, output, client, **{"partition_size": 100, **options})
    # skip_bad changes no row (a partition stopped by a bad input writes no part): accepted, with nothing to do.
    assert run(case, output, "tcp://127.0.0.1:1", partition_size=100, skip_bad=True) == str(output)
    with pytest.raises(ResumeMismatchError, match="model_sha256: '[0-9a-f]{64}' there, '[0-9a-f]{64}' now"):
        distributed.predict_catalogue(case["inputs"], str(other_model), str(output), client=client,
                                      partition_size=100, input_shape=SHAPE, thresholds=THRESHOLDS)
    with pytest.raises(ResumeMismatchError, match=r"made with other inputs: images: 182 there, 96 now.*Rerun with "
                                                  "the same model, settings and inputs"):
        distributed.predict_catalogue(case["inputs"][:1], case["model"], str(output), client=client,
                                      partition_size=100, input_shape=SHAPE, thresholds=THRESHOLDS)


def test_extra_columns_of_the_predictor_are_written_generically(tmp_path):
    """Whatever ``predictor.columns`` holds goes into the parts, typed even in a part without rows, and into CSV."""
    from gamornet.io.tables import ParquetTable

    columns, types = ("p_disk_std", "flagged"), {"p_disk_std": np.dtype(np.float32), "flagged": np.dtype(bool)}
    partitions = [distributed.Partition(0, ("a.npy[0:2]",), 2), distributed.Partition(1, ("a.npy[2:4]",), 2)]
    first = ParquetTable({"gamornet": "{}"}, columns, types)
    first.add(["a.npy[0]", "a.npy[1]"], [[0.8, 0.1, 0.1], [0.1, 0.1, 0.8]], ["disk", "bulge"],
              {"p_disk_std": np.array([0.05, 0.25], np.float32), "flagged": np.array([False, True])})
    first.write(tmp_path / partitions[0].file_name)
    ParquetTable({"gamornet": "{}"}, columns, types).write(tmp_path / partitions[1].file_name)  # all inputs bad
    distributed._write_dataset_metadata(str(tmp_path), partitions, {"model": "m"})
    table = pq.read_table(tmp_path)
    assert table.schema.field("p_disk_std").type == "float" and table.schema.field("flagged").type == "bool"
    assert table.column("flagged").to_pylist() == [False, True]
    assert distributed.read_provenance(tmp_path) == {"model": "m"}
    output = tmp_path / "table.csv"
    distributed._concatenate(str(tmp_path), partitions, str(output), "csv", columns, None, None)
    with open(output, newline="") as stream:
        rows = list(csv.reader(stream))
    assert rows[0] == ["source", "p_disk", "p_indet", "p_bulge", "class", "p_disk_std", "flagged"]
    assert rows[1][0] == "a.npy[0]" and rows[1][5:] == ["0.05", "false"] and rows[2][5:] == ["0.25", "true"]
    assert len(rows) == 3


def test_options_of_the_predictor_reach_the_workers(tmp_path, case, client):
    """MC dropout's columns are written, typed, and its settings recorded (a calibration file by its sha256)."""
    output = tmp_path / "mc.parquet"
    run(case, output, client, partition_size=100, mc_samples=3, seed=5)
    table = pq.read_table(output)
    columns = ("p_disk_std", "p_indet_std", "p_bulge_std", "entropy", "mutual_information")
    assert tuple(table.column_names) == ("source", "p_disk", "p_indet", "p_bulge", "class") + columns
    assert all(table.schema.field(name).type == "float" for name in columns)
    assert table.num_rows == 182 and np.isfinite(table.column("entropy").to_numpy()).all()
    provenance = distributed.read_provenance(output)
    assert provenance["mc_samples"] == 3 and provenance["mc_seed"] == 5
    assert provenance["predictor_options"] == {"mc_samples": 3, "seed": 5}
    with pytest.raises(ResumeMismatchError, match=r"predictor_options: \{'mc_samples': 3, 'seed': 5\} there, "
                                                  r"\{'mc_samples': 3, 'seed': 6\} now"):
        run(case, output, client, partition_size=100, mc_samples=3, seed=6)


def test_int8_is_calibrated_on_the_same_images_everywhere(tmp_path, case):
    """Without calibration images, every worker gets the first 300 images of the inputs, through a file."""
    from gamornet.inference.int8 import calibration_sha256

    settings = distributed.run_settings(case["model"], SHAPE, "keras", THRESHOLDS, 100, None, False,
                                     {"precision": "int8", "calibration_images": None})
    partitions = distributed.plan_partitions(case["inputs"], SHAPE, 100)
    settings = distributed._calibrate_int8_on_the_inputs(settings, partitions)
    images = settings.spec.option("calibration_images")
    assert images.shape == (182,) + SHAPE  # the inputs hold fewer than 300 images: all of them, in order
    np.testing.assert_array_equal(images, case["images"])
    record = settings.record()["predictor_options"]["calibration_images"]
    assert record == {"array_sha256": calibration_sha256(images), "shape": [182, 32, 32, 1]}
    written = []
    on_disk = distributed._arrays_to_files(settings, str(tmp_path), written)
    stored = on_disk.spec.option("calibration_images")
    assert stored.path == str(tmp_path / "_calibration_images.npy") and written == [stored.path]
    np.testing.assert_array_equal(stored.load(), images)
    assert on_disk.record() == settings.record()
    np.save(stored.path, images[:10])
    with pytest.raises(ValueError, match=r"_calibration_images.npy' changed since the run started"):
        stored.load()


def test_bf16_refines_near_the_boundaries_of_the_run_thresholds(case):
    """Every worker's bf16 predictor predicts again in fp32 the galaxies near the run's class boundaries."""
    settings = distributed.run_settings(case["model"], SHAPE, "keras", THRESHOLDS, 100, None, False, {"precision": "bf16"})
    assert settings.spec.option("thresholds") == (0.6, 0.6, False)
    assert settings.record()["predictor_options"] == {"precision": "bf16", "thresholds": [0.6, 0.6, False]}
    with settings.spec.load() as predictor:
        assert predictor.engine.refinement.describe()["rules"] == [{"disk": 0.6, "bulge": 0.6, "disk_must_lead": False}]
    fp32 = distributed.run_settings(case["model"], SHAPE, "keras", THRESHOLDS, 100, None, False, {"precision": "fp32"})
    assert fp32.spec.option("thresholds") is None


# --------------------------------------------------------------------------- bad inputs and errors


def test_bad_inputs_stop_the_run_or_are_skipped(tmp_path, case, client):
    bad = tmp_path / "bad"
    bad.mkdir()
    for index in range(3):
        shutil.copy(case["inputs"][2] + f"/g{index}.fits", bad / f"g{index}.fits")
    (bad / "g1.fits").write_bytes(b"not a FITS file")
    output = tmp_path / "run.parquet"
    with pytest.raises(BadInputError, match=r"cannot classify '.*g1.fits': cannot be read as FITS .* The \d of 2 "
                                            r"partitions finished are kept in .*Run the same command again with "
                                            r"--skip-bad \(skip_bad=True\) to skip the bad inputs"):
        distributed.predict_catalogue([str(bad)], case["model"], str(output), client=client, partition_size=2,
                                      input_shape=SHAPE, thresholds=THRESHOLDS)
    skipped = tmp_path / "skipped.parquet"
    distributed.predict_catalogue([str(bad)], case["model"], str(skipped), client=client, partition_size=2,
                                  input_shape=SHAPE, thresholds=THRESHOLDS, skip_bad=True)
    assert list(pd.read_parquet(skipped)["source"]) == [str(bad / "g0.fits"), str(bad / "g2.fits")]
    recorded = [bad_input for entry in read_manifest(skipped)["finished"].values() for bad_input in entry["bad"]]
    assert len(recorded) == 1 and recorded[0].startswith(f"{bad / 'g1.fits'}: cannot be read as FITS")


def test_a_worker_with_another_model_file_refuses_to_classify(case, client):
    settings = distributed.run_settings(case["model"], SHAPE, "keras", THRESHOLDS, 20, None, False, {})
    other = dataclasses.replace(settings.spec, model_sha256="0" * 64)
    with pytest.raises(ModelFileError, match=r"the worker on .* reads the model '.*model.hdf5' from '.*model.hdf5', "
                                             r"whose sha256 is [0-9a-f]{64}, but the run was started with a model of "
                                             "sha256 0{64}: give every worker the same model file"):
        client.submit(distributed._describe, other, pure=False).result()


def test_argument_errors(tmp_path, case):
    def call(output="run.parquet", **options):
        options = {"input_shape": SHAPE, "thresholds": THRESHOLDS, **options}
        return distributed.predict_catalogue(case["inputs"], case["model"], str(tmp_path / output),
                                             client="tcp://127.0.0.1:1", **options)

    with pytest.raises(TypeError, match="predict_catalogue got an unknown option 'precison'"):
        call(precison="bf16")
    with pytest.raises(TypeError, match=r"client must be a distributed.Client, a scheduler address .* Received: 0"):
        distributed.predict_catalogue(case["inputs"], case["model"], str(tmp_path / "x.parquet"), client=0,
                                      input_shape=SHAPE, thresholds=THRESHOLDS)
    with pytest.raises(ValueError, match=r"output must be a Parquet folder \(a name ending in .parquet or /\), or "
                                         "a table ending in .csv or .fits. Received: '.*run.txt'"):
        call("run.txt")
    with pytest.raises(ValueError, match="partition_size must be a positive integer. Received: partition_size=0"):
        call(partition_size=0)
    with pytest.raises(ValueError, match=r"input_shape is needed with a model file \('.*model.hdf5'\)"):
        call(input_shape=None)
    with pytest.raises(ValueError, match=r"no handbook threshold set fits the input shape \(32, 32, 1\)"):
        call(thresholds=None)
    with pytest.raises(FileNotFoundError, match=r"the folder '.*missing', where the output goes, does not exist"):
        call("missing/run.parquet")
    (tmp_path / "file.parquet").write_text("")
    with pytest.raises(FileExistsError, match=r"the output '.*file.parquet' is a file; a Parquet output is a folder"):
        call("file.parquet")
    (tmp_path / "occupied").mkdir()
    (tmp_path / "occupied" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"the output folder '.*occupied' holds files \(notes.txt\) but no "
                                         "_manifest.json: it is not the output of an earlier run"):
        call("occupied")
    (tmp_path / "damaged.parquet").mkdir()
    (tmp_path / "damaged.parquet" / "_manifest.json").write_text("{")
    with pytest.raises(ValueError, match=r"the manifest '.*_manifest.json' is damaged"):
        call("damaged.parquet")
    import dask

    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        with pytest.raises(OSError, match="cannot reach the Dask scheduler at 'tcp://127.0.0.1:1'"):
            call("unreachable.parquet")


def test_cli_options_that_need_a_cluster(tmp_path, case, capsys):
    base = ["predict", *case["inputs"], "--model", case["model"], *CLI_OPTIONS]
    assert main(base + ["--output", str(tmp_path / "run.parquet")]) == 1
    err = capsys.readouterr().err
    assert "is a Parquet folder, which gamornet predict writes on a Dask cluster: add --workers N" in err
    assert main(base + ["--output", str(tmp_path / "run.csv"), "--partition-size", "10"]) == 1
    assert "--partition-size is used with --workers N or --scheduler" in capsys.readouterr().err
    assert main(base + ["--output", str(tmp_path / "run.csv"), "--redo-changed"]) == 1
    assert "--redo-changed is used with --workers N or --scheduler" in capsys.readouterr().err
    assert main(base + ["--workers", "2"]) == 1
    assert "--output is needed with --workers or --scheduler" in capsys.readouterr().err
    assert main(base + ["--workers", "0", "--output", str(tmp_path / "x.parquet")]) == 1
    assert "--workers must be a positive number of worker processes. Received: 0" in capsys.readouterr().err
    assert main(["predict", "--catalog", "cat.fits", "--images", "tiles/", "--model", case["model"], *CLI_OPTIONS,
                 "--workers", "2", "--output", str(tmp_path / "x.parquet")]) == 1
    assert "--catalog and --images (stamps cut from survey images) run in one process for now" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(base + ["--workers", "2", "--scheduler", "tcp://127.0.0.1:1", "--output", "x.parquet"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path):
    from gamornet._utils.atomic import _owner

    host = _owner().split(".")[0]
    dead = tmp_path / f".tmp-part-000001-{'a' * 20}.parquet-{host}.999999999-x1.parquet"
    alive = tmp_path / f".tmp-part-000002-{'b' * 20}.parquet-{host}.{os.getpid()}-x2.parquet"
    dead.write_bytes(b"half")
    alive.write_bytes(b"half")
    distributed._remove_stale_temporaries(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == [alive.name]


# --------------------------------------------------------------------------- what a rerun trusts (issue 24)


def _cli(case, output, client, *extra):
    return ["predict", *extra, "--model", case["model"], *CLI_OPTIONS, "--output", str(output),
            "--scheduler", client.scheduler.address]


def test_a_rerun_refuses_rewritten_inputs_and_redoes_them_on_request(tmp_path, case, client, capsys):
    """Input identity: a file rewritten with other images of the same shape (same size) is named, and redone only
    with --redo-changed; the partitions of unchanged files are kept as they are."""
    images = case["images"]
    stack = tmp_path / "stack.npy"
    np.save(stack, images[:30])
    (tmp_path / "cutouts").mkdir()
    for index in range(12):
        fits.PrimaryHDU(images[30 + index, :, :, 0]).writeto(str(tmp_path / "cutouts" / f"g{index:02d}.fits"))
    output = tmp_path / "run.parquet"
    command = _cli(case, output, client, str(stack), str(tmp_path / "cutouts"), "--partition-size", "10")
    assert main(command) == 0  # partitions: stack 0-10, 10-20, 20-30; g00-g09; g10-g11
    before = pd.read_parquet(output)
    kept = {name: os.stat(output / name).st_mtime_ns for name in parts(output)}
    size = os.path.getsize(stack)
    np.save(stack, images[100:130])  # other galaxies, same shape
    shutil.copyfile(case["inputs"][2] + "/g5.fits", tmp_path / "cutouts" / "g11.fits")  # another galaxy
    capsys.readouterr()
    assert main(command) == 1
    err = capsys.readouterr().err
    assert (f"the inputs of 4 of the 5 finished partitions in {str(output)!r} changed since they were classified "
            f"(another size or modification time): {stack} (then {size} bytes, modified 20") in err
    assert f"{tmp_path / 'cutouts' / 'g11.fits'} (then 8640 bytes" in err and "--redo-changed" in err
    assert {name: os.stat(output / name).st_mtime_ns for name in parts(output)} == kept  # nothing touched
    assert main(command + ["--redo-changed"]) == 0
    assert "5 partitions: 4 classified now (4 of them again, as their input files had changed), 1 finished by an " \
           "earlier run" in capsys.readouterr().err
    after = pd.read_parquet(output)
    fresh = tmp_path / "fresh.parquet"
    assert main(_cli(case, fresh, client, str(stack), str(tmp_path / "cutouts"), "--partition-size", "10")) == 0
    pd.testing.assert_frame_equal(after, pd.read_parquet(fresh))  # as a run on the new files from scratch
    assert abs(after["p_disk"][0] - before["p_disk"][0]) > 1e-3  # the old probabilities are gone
    unchanged = [name for name in parts(output) if name.startswith("part-000003-")]
    assert os.stat(output / unchanged[0]).st_mtime_ns == kept[unchanged[0]]
    assert sorted(parts(output)) == sorted(kept)


def test_two_runs_at_once_on_one_folder_the_second_is_refused(tmp_path, case, client):
    """A and B (other thresholds) on one new folder: B is refused while A holds the folder's lock; A succeeds."""
    output = tmp_path / "run.parquet"
    code = "import sys\nfrom gamornet.cli.main import main\nsys.exit(main(sys.argv[1:]))\n"
    first = subprocess.Popen([sys.executable, "-c", code, *_cli(case, output, client, *case["inputs"]),
                              "--partition-size", "5"], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not os.path.exists(output / distributed.LOCK_NAME):
            assert first.poll() is None and time.monotonic() < deadline, first.stderr.read() if first.poll() else ""
            time.sleep(0.005)
        with pytest.raises(FolderInUseError, match=rf"the output folder {str(output)!r} is in use by "
                                                               rf"another run: process {first.pid} on .*gamornet "
                                                               "predict .*Wait for it to finish"):
            run(case, output, client, partition_size=5, thresholds=(0.3, 0.3))
    finally:
        _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    assert "37 partitions: 37 classified now" in err
    assert distributed.read_provenance(output)["thresholds"]["disk"] == 0.6  # A's table, A's thresholds
    assert distributed.LOCK_NAME not in os.listdir(output)
    with pytest.raises(ResumeMismatchError, match="thresholds"):  # after A: the usual rules
        run(case, output, client, partition_size=5, thresholds=(0.3, 0.3))


def test_a_model_card_added_between_runs_is_refused_before_anything_is_written(tmp_path, case, client):
    """The predictor's columns are settings: a card beside the model decides out_of_domain, so it is recorded."""
    from gamornet.models.card import write_model_card

    (tmp_path / "model").mkdir()
    model = tmp_path / "model" / "model.hdf5"
    shutil.copyfile(case["model"], model)
    output = tmp_path / "run.parquet"

    def resume():
        return distributed.predict_catalogue(case["inputs"], str(model), str(output), client=client,
                                             partition_size=100, input_shape=SHAPE, thresholds=THRESHOLDS,
                                             model_card="auto")

    resume()
    os.remove(output / parts(output)[1])  # as if the run had stopped before its last partition
    kept = parts(output)
    card = write_model_card(str(model.parent), case["images"][:50])
    with pytest.raises(ResumeMismatchError, match=r"predictor_options: \{'model_card': None\} there, "
                                                  r"\{'model_card': \{'json_sha256': '[0-9a-f]{64}'\}\} now"):
        resume()
    assert parts(output) == kept
    os.remove(card)  # the card restored: the run finishes, with one set of columns
    resume()
    table = pq.read_table(output)
    assert table.column_names == ["source", "p_disk", "p_indet", "p_bulge", "class"] and table.num_rows == 182
    assert read_manifest(output)["settings"]["columns"] == {}


def test_parts_of_different_columns_get_a_clear_error(tmp_path):
    """A folder wedged by an earlier gamornet (parts with and without out_of_domain): named, not AppendRowGroups."""
    from gamornet.io.tables import ParquetTable
    from gamornet.survey.manifest import Manifest

    partitions = [distributed.Partition(0, ("a.npy[0:1]",), 1), distributed.Partition(1, ("a.npy[1:2]",), 1)]
    plain = ParquetTable({"gamornet": "{}"}, (), {})
    plain.add(["a.npy[0]"], [[0.8, 0.1, 0.1]], ["disk"], {})
    plain.write(tmp_path / partitions[0].file_name)
    checked = ParquetTable({"gamornet": "{}"}, ("out_of_domain",), {"out_of_domain": np.dtype(object)})
    checked.add(["a.npy[1]"], [[0.1, 0.1, 0.8]], ["bulge"], {"out_of_domain": np.array([""], object)})
    checked.write(tmp_path / partitions[1].file_name)
    with pytest.raises(ValueError, match=rf"the parts of .* do not have the same columns: {partitions[0].file_name} "
                                         r"has source \(string\), p_disk \(float\), .*class \(string\); "
                                         rf"{partitions[1].file_name} has .*out_of_domain \(string\). .*remove the "
                                         "parts whose columns are not the ones you want"):
        distributed._write_dataset_metadata(str(tmp_path), partitions, {})
    manifest = Manifest(str(tmp_path), {}, {})
    manifest.check_columns({"out_of_domain": "|O"})
    with pytest.raises(ResumeMismatchError, match=r"holds parts with the columns \{'out_of_domain': '\|O'\}, but the "
                                                  r"predictor of this run writes \{\}"):
        manifest.check_columns({})


def test_sources_are_written_as_given_as_in_one_process(tmp_path, case, client, monkeypatch):
    """Relative inputs give the same source column on the cluster as in one process (labels join both)."""
    monkeypatch.chdir(case["folder"])
    base = ["predict", "stack.npy[0:30]", "cube.fits[0:10]", "cutouts", "--model", case["model"], *CLI_OPTIONS]
    assert main(base + ["--output", str(tmp_path / "one.csv")]) == 0
    assert main(base + ["--output", str(tmp_path / "dask.parquet"), "--scheduler", client.scheduler.address,
                        "--partition-size", "16"]) == 0
    one, dask = pd.read_csv(tmp_path / "one.csv"), pd.read_parquet(tmp_path / "dask.parquet")
    assert list(dask["source"]) == list(one["source"])
    assert list(one["source"][[0, 30, 40, 45]]) == ["stack.npy[0]", "cube.fits[0]", "cutouts/g0.fits",
                                                    "cutouts/g5.fits"]
    np.testing.assert_allclose(dask[["p_disk", "p_indet", "p_bulge"]].to_numpy(),
                               one[["p_disk", "p_indet", "p_bulge"]].to_numpy(), atol=1e-6)


def test_the_advice_after_a_bad_input_works(tmp_path, case, client, capsys):
    """'Run the same command again with --skip-bad': done, it finishes the folder and lists the bad input."""
    bad = tmp_path / "bad"
    bad.mkdir()
    for index in range(3):
        shutil.copy(case["inputs"][2] + f"/g{index}.fits", bad / f"g{index}.fits")
    (bad / "g1.fits").write_bytes(b"not a FITS file")
    output = tmp_path / "run.parquet"
    command = _cli(case, output, client, str(bad), "--partition-size", "2")
    assert main(command) == 1
    assert "Run the same command again with --skip-bad (skip_bad=True)" in capsys.readouterr().err
    assert main(command + ["--skip-bad"]) == 0
    err = capsys.readouterr().err
    assert "skipped 1 bad input" in err and f"{bad / 'g1.fits'}: cannot be read as FITS" in err
    assert list(pd.read_parquet(output)["source"]) == [str(bad / "g0.fits"), str(bad / "g2.fits")]


def test_a_run_that_never_starts_leaves_nothing_behind(tmp_path, case, client):
    """An unreachable scheduler, or a predictor that cannot load on the workers (int8 writes its calibration images
    for them first): the folder is left as it was found, and takes a run with other settings afterwards."""
    import dask
    from gamornet.errors import CalibrationMismatchError, MissingDependencyError
    from gamornet.science.calibration import save_calibration

    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        with pytest.raises(OSError, match="cannot reach the Dask scheduler"):
            run(case, tmp_path / "new.parquet", "tcp://127.0.0.1:1")
    assert not os.path.exists(tmp_path / "new.parquet")
    other_model = save_calibration(str(tmp_path / "calibration.json"), 1.5, "0" * 64)
    (tmp_path / "empty.parquet").mkdir()
    with pytest.raises((CalibrationMismatchError, MissingDependencyError)):
        run(case, tmp_path / "empty.parquet", client, partition_size=100, precision="int8", calibration=other_model)
    assert os.listdir(tmp_path / "empty.parquet") == []
    run(case, tmp_path / "empty.parquet", client, partition_size=100, thresholds=(0.5, 0.5))
    assert pq.read_table(tmp_path / "empty.parquet").num_rows == 182


def test_a_stop_in_the_final_step_says_that_every_partition_is_finished(tmp_path, case, client):
    """Ctrl-C while the table is written from the parts: 'all N partitions are finished', not 'do the rest'."""
    output = tmp_path / "run.csv"
    folder = tmp_path / "run.csv.parts"
    stop = threading.Event()

    def ctrl_c(signum, frame):
        if not stop.is_set():
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, ctrl_c)
    try:
        _interrupt_when(lambda: os.path.exists(folder / "_metadata"), stop)  # then the CSV is written
        with pytest.raises(KeyboardInterrupt) as stopped:
            run(case, output, client, partition_size=2)
    finally:
        stop.set()
        signal.signal(signal.SIGINT, previous)
    assert stopped.value.kept == (
        f"all 91 partitions are finished in {str(folder)!r}, but the run stopped before it had written the table "
        f"{str(output)!r}: run the same command again to write it (nothing is classified again)")
    assert not os.path.exists(output)
    assert run(case, output, "tcp://127.0.0.1:1", partition_size=2) == str(output)  # no cluster needed
    assert len(pd.read_csv(output)) == 182 and not os.path.exists(folder)


# --------------------------------------------------------------------------- faults (last: a worker restarts)


def test_a_worker_killed_mid_run_still_gives_every_input_once(tmp_path, case, single_process, client):
    output = tmp_path / "run.parquet"
    pids = client.run(os.getpid)
    victim = sorted(pids)[0]
    outcome = {}

    def predict():
        try:
            outcome["result"] = run(case, output, client, partition_size=5)
        except BaseException as error:  # noqa: BLE001 - reported by the assertion below
            outcome["error"] = error

    thread = threading.Thread(target=predict)
    thread.start()
    deadline = time.monotonic() + 120
    # Late in the run, so that the other worker finishes it before the restarted one has imported TensorFlow.
    while not (os.path.isdir(output) and len(parts(output)) >= 25 and client.processing().get(victim)):
        assert time.monotonic() < deadline and thread.is_alive(), outcome
        time.sleep(0.002)
    os.kill(pids[victim], signal.SIGKILL)  # mid-run, with partitions assigned to this worker
    thread.join(timeout=240)
    assert outcome.get("result") == str(output), outcome
    table = pd.read_parquet(output)
    assert table["source"].is_unique and len(table) == 182
    check_against_single_process(table, single_process, case["expected"])
