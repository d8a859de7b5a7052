"""Tests of the demo pipeline (gamornet.demo.run) and the `gamornet simulate` / `gamornet demo` subcommands."""

import csv
import dataclasses
import json
import math
import os
import re

import numpy as np
import pytest

from gamornet.cli import main as cli
from gamornet.demo.run import run_demo
from gamornet.science.metrics import confusion_counts, format_handbook_table, summary_metrics
from gamornet.training.simulate import read_parameter_table

pytest.importorskip("galsim")

# Actual classes (rows) x predicted classes (columns), written out by hand.
_COUNTS = np.array([[40, 5, 5], [2, 6, 2], [1, 4, 35]])


def test_confusion_counts_count_each_pair():
    true = [0, 0, 0, 1, 2, 2, 2, 2]
    predicted = [0, 0, 2, 1, 2, 2, 1, 0]
    assert confusion_counts(true, predicted).tolist() == [[2, 0, 1], [0, 1, 0], [1, 1, 2]]
    with pytest.raises(ValueError, match="same length"):
        confusion_counts([0, 1], [0])
    with pytest.raises(ValueError, match=r"classes must be 0 \(disk\), 1 \(indeterminate\) or 2 \(bulge\)"):
        confusion_counts([0, 3], [0, 1])


def test_summary_metrics_and_the_handbook_table():
    metrics = summary_metrics(_COUNTS)
    assert metrics["n_test"] == 100
    assert metrics["disk_recall"] == pytest.approx(40 / 50)
    assert metrics["bulge_recall"] == pytest.approx(35 / 40)
    assert metrics["accuracy"] == pytest.approx(81 / 100)
    assert metrics["indeterminate_fraction"] == pytest.approx(15 / 100)
    # The handbook's columns: of the galaxies predicted disk, the share actually disk / bulge.
    assert metrics["handbook"][0, 0] == pytest.approx(100 * 40 / 43)
    assert metrics["handbook"][2, 0] == pytest.approx(100 * 1 / 43)
    assert metrics["handbook"][0, 2] == pytest.approx(100 * 5 / 42)
    assert metrics["handbook"][2, 2] == pytest.approx(100 * 35 / 42)
    text = format_handbook_table(_COUNTS)
    assert "| Actual Disks               |          93.02% |           11.90% |" in text
    assert "| Actual Bulges              |           2.33% |           83.33% |" in text
    assert "Disk recall:  0.800   Bulge recall: 0.875" in text
    assert "Indeterminate fraction (predicted): 15.0%" in text
    assert "Accuracy (three classes): 81.0%" in text


def test_demo_end_to_end_through_the_command_line(tmp_path, capsys):
    output = tmp_path / "demo_output"
    status = cli.main([
        "demo", "--output-dir", str(output), "--size", "32", "--n-train", "48", "--n-validation", "16",
        "--n-test", "30", "--epochs", "2", "--batch-size", "16", "--workers", "1", "--quiet", "--seed", "3",
        "--exclude-indeterminate", "--disk-weight", "2",
    ])  # fmt: skip
    assert status == 0
    printed = capsys.readouterr().out
    assert "disks weighted x2 in the loss" in printed
    from gamornet.demo.run import DEMO_DEFAULTS

    assert f"batch 16, Adam lr={DEMO_DEFAULTS['lr']} (cosine)" in printed  # the demo's default optimiser
    assert "| Actual Disks" in printed and "Disk recall:" in printed and "Indeterminate fraction" in printed
    for name in ("trained_model.hdf5", "metrics.csv", "predictions.csv", "preprocessing.json", "demo.png"):
        assert (output / name).is_file(), name
    assert not [path.name for path in output.iterdir() if path.name.startswith(".tmp")]
    with open(output / "metrics.csv", newline="") as stream:
        history = list(csv.DictReader(stream))
    assert [int(row["epoch"]) for row in history] == [0, 1]
    with open(output / "predictions.csv", newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert len(rows) == 30
    probabilities = np.array([[float(row[key]) for key in ("p_disk", "p_indeterminate", "p_bulge")] for row in rows])
    assert np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-3)
    names = np.array(["disk", "indeterminate", "bulge"])
    assert [row["predicted_label"] for row in rows] == list(names[probabilities.argmax(axis=1)])
    # The true label beside the probabilities follows the paper's rule from the true B/T.
    for row in rows:
        ratio = float(row["bulge_to_total"])
        assert row["true_label"] == ("disk" if ratio < 0.45 else "bulge" if ratio > 0.55 else "indeterminate")
    # The printed counts are those of predictions.csv.
    true = np.array([list(names).index(row["true_label"]) for row in rows])
    counts = confusion_counts(true, probabilities.argmax(axis=1))
    assert format_handbook_table(counts) in printed
    settings = json.loads((output / "preprocessing.json").read_text())
    assert settings["input_shape"] == [32, 32, 1] and settings["preprocess_images"]["stretch"] == "none"
    assert settings["exclude_indeterminate_from_training"] is True
    assert (output / "demo.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The demo's other stages: calibration, thresholds, MC dropout, the model card and the shifted set.
    for text in ("Calibration: temperature T =", "Classes from thresholds chosen on the validation set",
                 "Indeterminate fraction (predicted)", "MC dropout (30 draws)", "Shifted test set",
                 "asinh stretch, peak scaling", "lie outside the model card's central 99% range"):
        assert text in printed, text
    summary = json.loads((output / "demo_summary.json").read_text())
    assert summary["main"]["out_of_domain"].keys() == {"test", "shifted"}
    assert summary["comparison"]["preprocessing"]["stretch"] == "asinh"
    card = json.loads((output / "model_card.json").read_text())
    assert card["trained_by"] == "gamornet demo" and card["preprocessing"]["stretch"] == "none"
    learned = re.search(r"left out of training: (\d+) training", printed)
    assert card["n_training_images"] == int(learned.group(1))
    assert json.loads((output / "compare_asinh" / "model_card.json").read_text())["preprocessing"]["stretch"] == "asinh"
    # predictions.csv: the thresholded class follows the chosen rule on the calibrated probabilities.
    calibrated = np.array([[float(row[f"p_{name}_calibrated"]) for name in ("disk", "indeterminate", "bulge")]
                           for row in rows])  # fmt: skip
    rule = (summary["thresholds"]["disk"], summary["thresholds"]["bulge"])
    from gamornet.science.classify import classify

    assert [row["thresholded_label"] for row in rows] == classify(calibrated, rule).tolist()
    from gamornet.models.card import STATISTICS

    assert all(set(row["out_of_domain"].split(";")) <= set(STATISTICS) for row in rows if row["out_of_domain"])
    assert np.allclose(calibrated.sum(axis=1), 1.0, atol=1e-3)


def test_demo_refuses_bad_settings_before_any_work(tmp_path):
    with pytest.raises(ValueError, match="n_train must be a positive integer"):
        run_demo(str(tmp_path / "a"), n_train=0)
    with pytest.raises(ValueError, match="stretch must be one of"):
        run_demo(str(tmp_path / "b"), stretch="sqrt")
    with pytest.raises(ValueError, match="thresholds must be"):
        run_demo(str(tmp_path / "c"), thresholds="keras_HST")
    with pytest.raises(ValueError, match="preset must be 'SDSS', 'CANDELS'"):
        run_demo(str(tmp_path / "d"), preset="HST")
    file_path = tmp_path / "a_file"
    file_path.write_text("")
    with pytest.raises(NotADirectoryError, match="output_dir must be a folder"):
        run_demo(str(file_path))
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a_file"]


def test_simulate_command_writes_fits_table_and_arrays(tmp_path, capsys):
    output = tmp_path / "sims"
    status = cli.main(["simulate", "12", "--output-dir", str(output), "--size", "24", "--npy", "--workers", "1",
                       "--quiet", "--seed", "4"])  # fmt: skip
    assert status == 0
    assert "Simulated 12 CANDELS-like galaxies (24x24 pixels of 0.06 arcsec)" in capsys.readouterr().out
    assert sorted(os.listdir(output)) == sorted(
        [f"output_img_{i}.fits" for i in range(12)] + ["sim_para.txt", "images.npy", "labels.npy"]
    )
    table = read_parameter_table(str(output / "sim_para.txt"))
    labels = np.load(output / "labels.npy")
    assert labels.shape == (12, 3) and np.array_equal(labels.argmax(axis=1), table["label"])
    assert np.load(output / "images.npy").shape == (12, 24, 24, 1)


def test_simulate_command_table_only_with_sky(tmp_path):
    output = tmp_path / "sky"
    assert cli.main(["simulate", "3", "--output-dir", str(output), "--preset", "SDSS", "--size", "16", "--no-fits",
                     "--keep-sky", "--quiet", "--workers", "1"]) == 0  # fmt: skip
    assert sorted(os.listdir(output)) == ["sim_para.txt"]


def test_subcommands_refuse_bad_command_lines(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["simulate", "0", "--output-dir", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "expected a positive integer, got '0'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["simulate", "5"])
    assert "--output-dir" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["demo", "--lr", "-1"])
    assert "expected a positive number, got '-1'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["demo", "--stretch", "sqrt"])
    # Bad values that argparse lets through are reported as a gamornet error, exit status 1.
    file_path = tmp_path / "a_file"
    file_path.write_text("")
    assert cli.main(["demo", "--output-dir", str(file_path)]) == 1
    assert "gamornet demo: error: output_dir must be a folder" in capsys.readouterr().err


def test_demo_defaults_are_those_of_run_demo_and_the_command_line():
    import inspect

    from gamornet.demo.run import DEMO_DEFAULTS

    parameters = inspect.signature(run_demo).parameters
    for key, value in DEMO_DEFAULTS.items():
        assert parameters[key].default == value, key
    args = cli.build_parser().parse_args(["demo"])
    for key, value in DEMO_DEFAULTS.items():
        assert getattr(args, key) == value, key


def test_demo_survey_keeps_disks_inside_the_cutout(tmp_path):
    from gamornet.demo.run import demo_survey

    survey = demo_survey("CANDELS", 64)
    # 0.4 x the half-width of 64 pixels of 0.06 arcsec.
    assert survey.disk_radius_range == pytest.approx((0.15, 0.4 * 32 * 0.06))
    assert survey.bulge_radius_range == pytest.approx((0.06, 0.6))
    assert survey.shape == (64, 64) and survey.pixel_scale == 0.06
    assert demo_survey("CANDELS", 83, magnitude_range=(19, 22)).magnitude_range == (19, 22)
    assert demo_survey("SDSS", 167).disk_radius_range == (1.5, 10.0)  # 13.2 arcsec would fit: unchanged
    assert demo_survey("SDSS", 64).disk_radius_range == pytest.approx((1.5, 0.4 * 32 * 0.396))
    with pytest.raises(ValueError, match="lr_schedule must be 'cosine' or 'constant'"):
        run_demo(str(tmp_path / "unused"), lr_schedule="step")
    assert not (tmp_path / "unused").exists()


def test_demo_config_makes_the_command_line_options():
    import inspect

    from gamornet.demo.run import DEMO_DEFAULTS, DemoConfig

    parser = cli.build_parser()
    demo_parser = parser._subparsers._group_actions[0].choices["demo"]
    options = {action.dest: action for action in demo_parser._actions}
    for field in dataclasses.fields(DemoConfig):
        action = options[field.name]
        assert action.option_strings[0] == "--" + field.name.replace("_", "-")
        assert action.default == field.default == DEMO_DEFAULTS[field.name]
        assert action.help.startswith(field.metadata["help"]), field.name
    # Every keyword of run_demo beyond the run options is a DemoConfig field, with its default.
    keywords = inspect.signature(run_demo).parameters
    assert set(keywords) == set(DEMO_DEFAULTS) | {"output_dir", "config", "n_workers", "progress", "plot", "stream"}
    # Non-default values travel from the command line into the DemoConfig.
    args = parser.parse_args(["demo", "--preset", "SDSS", "--size", "40", "--magnitude-range", "15", "17",
                              "--exclude-indeterminate", "--lr", "0.01", "--momentum", "0.5", "--no-nesterov",
                              "--stretch", "log", "--scaling", "sum", "--softening", "2", "--seed", "9",
                              "--thresholds", "keras_SDSS", "--lr-schedule", "constant", "--optimizer", "sgd",
                              "--training-bulge-to-total", "0.1", "0.9"])  # fmt: skip
    from gamornet.cli.simulate import _demo_config

    config = _demo_config(args)
    assert config == DemoConfig(preset="SDSS", size=40, magnitude_range=(15.0, 17.0), exclude_indeterminate=True,
                                lr=0.01, momentum=0.5, nesterov=False, stretch="log", scaling="sum", softening=2.0,
                                seed=9, thresholds="keras_SDSS", lr_schedule="constant", optimizer="sgd",
                                training_bulge_to_total=(0.1, 0.9))  # fmt: skip
    assert DemoConfig().optimizer == "adam"
    assert config.survey.magnitude_range == (15.0, 17.0) and config.input_shape == (40, 40, 1)
    assert config.training_survey.bulge_to_total_range == (0.1, 0.9) and config.survey.bulge_to_total_range == (0, 1)


def test_demo_defaults_are_what_make_demo_runs():
    from gamornet.demo.run import DemoConfig

    with open(os.path.join(os.path.dirname(__file__), os.pardir, "Makefile"), encoding="utf-8") as stream:
        line = next(text for text in stream if "gamornet demo" in text)
    words = line.split()
    args = cli.build_parser().parse_args(words[words.index("demo"):])
    from gamornet.cli.simulate import _demo_config

    assert _demo_config(args).survey == DemoConfig().survey
    assert DemoConfig().survey.magnitude_range == (19.0, 22.5)
    assert DemoConfig(preset="SDSS").survey.magnitude_range == (14.0, 18.0)  # the SDSS preset's own


def test_demo_config_refuses_bad_settings():
    from gamornet.demo.run import DemoConfig

    with pytest.raises(ValueError, match="lr must be a positive number"):
        DemoConfig(lr=0)
    with pytest.raises(ValueError, match="optimizer must be 'sgd' .* or 'adam' .*Received: optimizer='momentum'"):
        DemoConfig(optimizer="momentum")
    with pytest.raises(ValueError, match="disk_weight must be a positive number. Received: disk_weight=0"):
        DemoConfig(disk_weight=0)
    with pytest.raises(ValueError, match="momentum must be a finite number >= 0"):
        DemoConfig(momentum=-1)
    with pytest.raises(TypeError, match="nesterov must be True or False"):
        DemoConfig(nesterov="yes")
    with pytest.raises(TypeError, match="magnitude_range must be a pair of numbers"):
        DemoConfig(magnitude_range=(19, "faint"))
    with pytest.raises(ValueError, match="seed must be an integer >= 0"):
        DemoConfig(seed=-1)
    with pytest.raises(TypeError, match="config must be a DemoConfig"):
        run_demo("unused", config={"n_train": 5})
    with pytest.raises(TypeError, match=r"unknown settings \['n_galaxies'\]"):
        run_demo("unused", n_galaxies=5)
    with pytest.raises(dataclasses.FrozenInstanceError):
        DemoConfig().seed = 1
    assert not os.path.exists("unused")


def test_demo_takes_numpy_integer_seeds_as_simulate_does(tmp_path):
    from gamornet.demo.run import DemoConfig

    config = DemoConfig(seed=np.int64(7))
    assert config.seed == 7 and type(config.seed) is int
    # Before, the demo refused a numpy seed that gamornet.training.simulate accepts; now it goes on to the folder check.
    file_path = tmp_path / "a_file"
    file_path.write_text("")
    with pytest.raises(NotADirectoryError, match="output_dir must be a folder"):
        run_demo(str(file_path), seed=np.uint32(3))
    with pytest.raises(TypeError, match="output_dir must be the path of a folder"):
        run_demo(3)


def test_shifted_survey_changes_the_psf_and_scales_the_noise():
    from gamornet.demo.run import DemoConfig, shifted_survey

    survey = DemoConfig().survey
    shifted = shifted_survey(survey, psf_fwhm=0.5, noise=3.0)
    assert shifted.noise_per_pixel() == pytest.approx(3.0 * survey.noise_per_pixel(), rel=1e-12)
    assert (shifted.psf, shifted.psf_fwhm) == ("kolmogorov", 0.5)
    # Everything that sets the true classes stays: the galaxies' ranges and the cutout.
    for name in ("magnitude_range", "bulge_to_total_range", "disk_radius_range", "bulge_radius_range", "shape",
                 "pixel_scale", "sky_level"):
        assert getattr(shifted, name) == getattr(survey, name), name
    # The sky's Poisson noise alone is 0.66 of CANDELS' noise (sky 311 e-, read noise 20 e- per pixel).
    lowest = math.sqrt(survey.sky_level * survey.gain) / (survey.noise_per_pixel() * survey.gain)
    assert shifted_survey(survey, 0.5, lowest * 1.0001).read_noise == pytest.approx(0.0, abs=0.5)
    with pytest.raises(ValueError, match=r"shifted_noise must be at least 0\.66"):
        shifted_survey(survey, 0.5, 0.5)
    with pytest.raises(ValueError, match="shifted_psf_fwhm must be a positive number"):
        DemoConfig(shifted_psf_fwhm=0)


def test_demo_config_phase_settings():
    from gamornet.demo.run import DemoConfig

    config = DemoConfig()
    assert config.comparison_preprocessing["stretch"] == "asinh" and config.comparison_preprocessing["scaling"] == "peak"
    assert DemoConfig(compare_stretch="off").comparison_preprocessing is None
    assert DemoConfig(compare_stretch="none").comparison_preprocessing is None  # the same as the main network's
    assert "validation set" in config.class_rule and "keras_SDSS" in DemoConfig(thresholds="keras_SDSS").class_rule
    with pytest.raises(ValueError, match=r"disk_purity must be a fraction in \(0, 1\]"):
        DemoConfig(disk_purity=1.5)
    with pytest.raises(ValueError, match="bulge_purity must be a positive number"):
        DemoConfig(bulge_purity=0)
    with pytest.raises(ValueError, match="compare_stretch must be one of 'none', 'asinh', 'log' or 'off'"):
        DemoConfig(compare_stretch="sqrt")
    with pytest.raises(ValueError, match="n_shifted must be a positive integer"):
        DemoConfig(n_shifted=0)
    with pytest.raises(ValueError, match="mc_samples must be a positive integer"):
        DemoConfig(mc_samples=0)
    with pytest.raises(ValueError, match="training_bulge_to_total must be a pair \\(low, high\\) with 0 <= low < high"):
        DemoConfig(training_bulge_to_total=(0.5, 0.2))
    with pytest.raises(TypeError, match="training_bulge_to_total must be a pair of numbers"):
        DemoConfig(training_bulge_to_total=0.8)


def test_evaluation_falls_back_when_the_validation_set_cannot_give_a_temperature_or_a_purity():
    from gamornet.demo._evaluate import fitted_temperature, threshold_rule
    from gamornet.demo.run import DemoConfig

    messages = []

    def log(message, stamp=True):
        messages.append(message)

    # Every most probable class right: the likelihood grows as T goes to 0, so T = 1 is kept and said.
    probabilities = np.array([[0.8, 0.1, 0.1], [0.1, 0.1, 0.8], [0.7, 0.2, 0.1]])
    assert fitted_temperature(probabilities, [0, 2, 0], log) == 1.0
    assert "no temperature fitted, T = 1 kept" in messages[-1]
    # The best disk purity reachable is 2/3 (a bulge has the highest p_disk but one): the demo settles for it.
    probabilities = np.array([[0.9, 0.05, 0.05], [0.8, 0.1, 0.1], [0.7, 0.2, 0.1], [0.1, 0.1, 0.8], [0.2, 0.1, 0.7]])
    rule, choice = threshold_rule(DemoConfig(), probabilities, np.array([2, 0, 0, 2, 2]), log)
    assert "a disk purity of 0.95 is out of reach on the validation set; using 0.666" in messages[-1]
    assert rule.disk == pytest.approx(0.7) and choice.disk_purity == pytest.approx(2 / 3)
    assert rule.bulge == pytest.approx(0.7) and choice.bulge_purity == 1.0
    handbook, none = threshold_rule(DemoConfig(thresholds="keras_CANDELS"), probabilities, [2, 0, 0, 2, 2], log)
    assert none is None and handbook.bulge == 0.6
