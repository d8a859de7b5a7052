"""The training recipe (gamornet.training.recipe): the warm-up + cosine schedule, the best epoch kept, the divergence
guard; trained on galaxies of another simulator than gamornet's (benchmarks/other_simulator.py), at tiny sizes."""

import importlib.util
import json
import math
import os
import warnings

import numpy as np
import pytest

from gamornet.cli.main import main
from gamornet.errors import TrainingDivergedWarning



def _other_simulator():
    """benchmarks/other_simulator.py, loaded from its file (the benchmarks folder is not put on sys.path: its
    distributed.py would hide Dask's ``distributed``)."""
    path = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "other_simulator.py")
    spec = importlib.util.spec_from_file_location("other_simulator", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


other_simulator = _other_simulator()
simulate_other, write_fits_catalogue = other_simulator.simulate_other, other_simulator.write_fits_catalogue

SIZE = 32


@pytest.fixture(scope="module")
def galaxies():
    """Bright galaxies of the other simulator (Moffat PSF, Gaussian sky noise), 32 x 32 pixels, with one-hot labels."""
    images, table = simulate_other(480, seed=7, size=SIZE, magnitude_range=(19.0, 21.0))
    return images, np.eye(3, dtype=np.float32)[table["label"]], table


def test_the_schedule_warms_up_then_falls_along_a_cosine():
    from gamornet.training.recipe import warmup_cosine

    lr, epochs, steps = 1e-3, 3, 8
    schedule = warmup_cosine(lr, epochs, steps)
    total, warmup = epochs * steps, steps // 2
    # Linear from lr/20 to lr over half an epoch, then lr * (1 + cos(pi t)) / 2 (Loshchilov & Hutter 2017).
    expected = [lr / 20 + (lr - lr / 20) * step / warmup if step < warmup else
                lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (total - warmup))) for step in range(total + 1)]
    np.testing.assert_allclose([float(schedule(step)) for step in range(total + 1)], expected, rtol=1e-5, atol=1e-12)
    assert warmup_cosine(lr, 1, 1) == lr  # a single step: nothing to schedule


def test_the_recipe_is_the_default_with_adam_only():
    from gamornet.training.recipe import resolve_recipe

    assert resolve_recipe("adam", 6e-4, 0.0) == ("cosine", True, True)
    assert resolve_recipe("sgd", 1e-4, 0.0) == ("constant", False, False)  # 0.4.x
    assert resolve_recipe("adam", 6e-4, 1e-3) == ("constant", True, True)  # decay keeps lr as given
    assert resolve_recipe("sgd", 1e-4, 0.0, "cosine", True, True) == ("cosine", True, True)
    with pytest.raises(ValueError, match="lr_schedule must be one of 'auto', 'cosine', 'constant'"):
        resolve_recipe("adam", 6e-4, 0.0, "linear")
    with pytest.raises(ValueError, match="give lr as a number and decay=0"):
        resolve_recipe("adam", 6e-4, 1e-3, "cosine")
    with pytest.raises(TypeError, match="keep_best must be True, False or 'auto'"):
        resolve_recipe("adam", 6e-4, 0.0, keep_best="yes")


def test_the_best_epoch_is_put_back_and_named(tmp_path, capsys):
    from gamornet.models.network import keras
    from gamornet.training.recipe import KeepBestEpoch

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    keep = KeepBestEpoch(backup=str(tmp_path / "backup"), epoch_base=1)
    keep.set_model(model)
    keep.on_train_begin()
    states = {}
    for epoch, val_loss in enumerate([0.9, 0.5, 0.7]):
        model.set_weights([np.full((2, 1), float(epoch), np.float32), np.zeros(1, np.float32)])
        states[epoch] = [weights.copy() for weights in model.get_weights()]
        keep.on_epoch_end(epoch, {"val_loss": val_loss})
    keep.on_train_end()
    np.testing.assert_array_equal(model.get_weights()[0], states[1][0])
    assert keep.kept == {"kept_epoch": 2, "kept_val_loss": 0.5, "last_epoch": 3}
    assert "Kept epoch 2, whose validation loss 0.5000 is the lowest (the last epoch, 3, had 0.7000)" in \
        capsys.readouterr().out  # fmt: skip
    # A resumed run knows the best epoch of the run before it.
    resumed = KeepBestEpoch(backup=str(tmp_path / "backup"), epoch_base=1, quiet=True)
    resumed.set_model(model)
    resumed.on_train_begin()
    model.set_weights([np.full((2, 1), 9.0, np.float32), np.zeros(1, np.float32)])
    resumed.on_epoch_end(3, {"val_loss": 0.8})
    resumed.on_train_end()
    np.testing.assert_array_equal(model.get_weights()[0], states[1][0])


@pytest.mark.slow
def test_the_guard_does_not_fire_on_the_recipe(galaxies, tmp_path):
    from gamornet.keras_module import gamornet_train_keras

    images, labels, _ = galaxies
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gamornet_train_keras(images[:384], labels[:384], images[384:], labels[384:], (SIZE, SIZE, 1),
                             files_save_path=str(tmp_path), epochs=2, batch_size=32, lr=0.0006, optimizer="adam",
                             preprocessing={"scaling": "peak"}, verbose=0, seed=0)  # fmt: skip
    assert not [str(warning.message) for warning in caught if issubclass(warning.category, TrainingDivergedWarning)]
    training = json.load(open(tmp_path / "model_card.json"))["training"]
    assert training["lr_schedule"] == "cosine" and training["kept_epoch"] in (0, 1) and "diverged" not in training


@pytest.mark.slow
def test_the_guard_fires_on_a_too_large_lr_says_so_and_stops(galaxies, tmp_path, capsys):
    images, _, table = galaxies
    train = write_fits_catalogue(images[:96], table[:96], str(tmp_path / "train"))
    validation = write_fits_catalogue(images[384:], table[384:], str(tmp_path / "validation"))
    command = ["train", "--catalog", train, "--validation-catalog", validation, "--input-shape", f"{SIZE},{SIZE},1",
               "--output-dir", str(tmp_path / "run"), "--optimizer", "adam", "--lr", "0.05", "--epochs", "3",
               "--batch-size", "32", "--scaling", "peak", "--seed", "0", "--quiet"]  # fmt: skip
    with pytest.warns(TrainingDivergedWarning):
        assert main(command) == 1
    err = capsys.readouterr().err
    assert "gamornet train: Training has diverged after epoch 1:" in err
    assert "is above 1.099, that of a uniform guess" in err and "try --lr 0.017" in err
    assert "Training stopped here (ask to go on with --keep-going" in err
    with open(tmp_path / "run" / "metrics.csv") as stream:
        assert len(stream.read().strip().splitlines()) == 2  # the header and the one epoch trained
    assert json.load(open(tmp_path / "run" / "model_card.json"))["training"]["diverged"].startswith("Training has")
    # --keep-going: said, but all epochs are trained.
    with pytest.warns(TrainingDivergedWarning):
        assert main(command + ["--keep-going", "--fresh"]) == 0
    with open(tmp_path / "run" / "metrics.csv") as stream:
        assert len(stream.read().strip().splitlines()) == 4
    assert "Going on, as asked" in capsys.readouterr().err
