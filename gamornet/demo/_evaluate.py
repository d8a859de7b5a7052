"""The demo's evaluation: calibration, thresholds, MC-dropout uncertainty and the domain check of one network.

Everything here scores a network the demo trained, on the demo's labelled
sets: the validation set (all three classes) fits the temperature and chooses
the thresholds; the test set and the shifted test set are scored. It uses the
package's pieces (:mod:`gamornet.science.calibration`, :mod:`gamornet.science.thresholds`,
:mod:`gamornet.science.uncertainty`, :mod:`gamornet.models.card`, :mod:`gamornet.science.metrics`) and
imports TensorFlow only inside the functions that need it.
"""

import numpy as np

from gamornet.science import calibration
from gamornet.science import classify
from gamornet.science.thresholds import choose_thresholds
from gamornet.errors import UnreachablePurityError
from gamornet.science.metrics import classes_from_names, confusion_counts, summary_metrics
from gamornet.models.card import check_domain
from gamornet.inference.mc_dropout import MCDropoutHead
from gamornet.science.uncertainty import error_detection_auroc, summarize_samples

#: The sets every trained network predicts, in this order.
PREDICTED_SETS = ("validation", "test", "shifted")


def predict_sets(predictor, inputs):
    """Probabilities of every set of :data:`PREDICTED_SETS`, through the predictor's batch loop."""
    return {name: predictor.predict(inputs[name], batch_size=256) for name in PREDICTED_SETS}


def fitted_temperature(probabilities, labels, log):
    """The temperature fitted on the validation set; 1 (no change) when none can be fitted, said why."""
    try:
        return calibration.fit_temperature(probabilities, labels)
    except ValueError as error:
        log(f"no temperature fitted, T = 1 kept: {error}", stamp=False)
        return 1.0


def _lowest_reachable(probabilities, labels, disk_purity, bulge_purity, log):
    """choose_thresholds, lowering a purity that no threshold reaches on the validation set to the best reached."""
    for _ in range(2):
        try:
            return choose_thresholds(probabilities, labels, disk_purity, bulge_purity)
        except UnreachablePurityError as error:
            best = float(np.floor(error.best_purity * 1000) / 1000)
            log(f"a {error.kind} purity of {error.target:g} is out of reach on the validation set; "
                f"using {best:g}, the highest reached", stamp=False)  # fmt: skip
            disk_purity, bulge_purity = (best, bulge_purity) if error.kind == "disk" else (disk_purity, best)
    return choose_thresholds(probabilities, labels, disk_purity, bulge_purity)


def threshold_rule(config, calibrated_validation, validation_classes, log):
    """The rule that turns probabilities into classes, and the ThresholdChoice it came from (None for a handbook set).

    Without ``config.thresholds``, the lowest thresholds on the calibrated
    p_disk and p_bulge of the validation set that reach ``config.disk_purity``
    and ``config.bulge_purity``; otherwise the handbook set named.
    """
    if config.thresholds is not None:
        return classify.resolve_thresholds(config.thresholds), None
    choice = _lowest_reachable(calibrated_validation, validation_classes, config.disk_purity, config.bulge_purity, log)
    return choice.to_thresholds(), choice


def mc_dropout(engine, images, n_samples, seed):
    """MC-dropout summary of ``images``: the convolutional features once, the dense head ``n_samples`` times.

    ``engine`` is a predictor's (:attr:`gamornet.inference.predictor.Predictor.engine`).
    """
    import keras

    dense = [layer for layer in engine.head_layers if isinstance(layer, keras.layers.Dense)]
    rates = [layer.rate for layer in engine.head_layers if isinstance(layer, keras.layers.Dropout)]
    head = MCDropoutHead(dense, rates, n_samples=n_samples, seed=seed)
    draws = [head(engine.features(images[start : start + 256])) for start in range(0, len(images), 256)]
    return summarize_samples(np.concatenate(draws, axis=1))


def _auroc(scores, is_error):
    return error_detection_auroc(scores, is_error) if 0 < is_error.sum() < len(is_error) else float("nan")


def uncertainty_scores(engine, images, predicted, true_classes, n_samples, seed):
    """The AUROC of the MC-dropout std of the predicted class, and of the mutual information, as error detectors."""
    summary = mc_dropout(engine, images, n_samples, seed)
    top_std = summary.std[np.arange(len(predicted)), predicted]
    is_error = np.asarray(predicted != true_classes)
    return {
        "top_std": top_std,
        "mutual_information": summary.mutual_information,
        "auroc_std": _auroc(top_std.astype(np.float64), is_error),
        "auroc_mutual_information": _auroc(summary.mutual_information.astype(np.float64), is_error),
        "error_rate": float(is_error.mean()),
    }


def argmax_scores(probabilities, true_classes):
    """Counts and metrics of the most probable class."""
    predicted = np.argmax(probabilities, axis=1)
    counts = confusion_counts(true_classes, predicted)
    return {"predicted": predicted, "counts": counts, "metrics": summary_metrics(counts)}


def evaluate_network(config, network, sets, inputs, card, log):
    """Every score of one trained network: argmax, calibration, thresholds, uncertainty and domain.

    Parameters
    ----------
    network : dict
        ``path`` (the saved model) and ``mc_seed`` (the seed of the dropout masks).
    sets : dict
        ``(images, parameters)`` per set name, as simulated.
    inputs : dict
        The preprocessed images per set name.
    card : dict
        The network's model card.

    Returns
    -------
    dict
    """
    from gamornet.inference.predictor import load_predictor

    truth = {name: sets[name][1]["label"] for name in PREDICTED_SETS}
    log(f"Predicting the validation, test and shifted sets with {network['path']}")
    with load_predictor(network["path"], config.input_shape, preprocessing=None) as predictor:  # inputs preprocessed
        raw = predict_sets(predictor, inputs)
        test = argmax_scores(raw["test"], truth["test"])
        log(f"MC dropout: {config.mc_samples} draws of the dense layers per test galaxy")
        uncertainty = uncertainty_scores(predictor.engine, inputs["test"], test["predicted"], truth["test"],
                                         config.mc_samples, network["mc_seed"])  # fmt: skip
    temperature = fitted_temperature(raw["validation"], truth["validation"], log)
    calibrated = {name: calibration.apply_temperature(raw[name], temperature) for name in PREDICTED_SETS}
    rule, choice = threshold_rule(config, calibrated["validation"], truth["validation"], log)
    source = raw if config.thresholds is not None else calibrated  # handbook sets are for raw probabilities
    thresholded = classes_from_names(classify.classify(source["test"], rule))
    counts = confusion_counts(truth["test"], thresholded)
    return {
        "probabilities": raw, "calibrated": calibrated, "temperature": temperature,
        "ece_before": calibration.expected_calibration_error(raw["test"], truth["test"]),
        "ece_after": calibration.expected_calibration_error(calibrated["test"], truth["test"]),
        "rule": rule, "choice": choice, "thresholded": thresholded, "thresholded_counts": counts,
        "thresholded_metrics": summary_metrics(counts), "test": test,
        "shifted": argmax_scores(raw["shifted"], truth["shifted"]), "uncertainty": uncertainty,
        "domain": {name: check_domain(inputs[name], card) for name in ("test", "shifted")},
    }  # fmt: skip


def evaluate_comparison(config, network, sets, inputs, card):
    """The scores of a network trained with other preprocessing: argmax recall and domain share, test and shifted."""
    from gamornet.inference.predictor import load_predictor

    truth = {name: sets[name][1]["label"] for name in PREDICTED_SETS}
    with load_predictor(network["path"], config.input_shape, preprocessing=None) as predictor:  # inputs preprocessed
        raw = predict_sets(predictor, inputs)
    return {
        "test": argmax_scores(raw["test"], truth["test"]),
        "shifted": argmax_scores(raw["shifted"], truth["shifted"]),
        "domain": {name: check_domain(inputs[name], card) for name in ("test", "shifted")},
    }
