"""gamornet.uncertainty: the MC-dropout summaries, and the dropout head against the numpy reference."""

import numpy as np
import pytest

import reference
from gamornet import uncertainty

LN3 = np.log(3.0)


# --------------------------------------------------------------------------- summaries of draws


def test_predictive_entropy_of_known_distributions():
    probabilities = [[1.0, 0.0, 0.0], [1 / 3, 1 / 3, 1 / 3], [0.5, 0.5, 0.0], [0.7, 0.2, 0.1]]
    expected = [0.0, LN3, np.log(2.0), -(0.7 * np.log(0.7) + 0.2 * np.log(0.2) + 0.1 * np.log(0.1))]
    np.testing.assert_allclose(uncertainty.predictive_entropy(probabilities), expected, rtol=1e-12)


def _by_loops(samples):
    """mean, std (ddof=0), entropy of the mean and mutual information, galaxy by galaxy."""
    n_samples, n, _ = samples.shape
    rows = []
    for i in range(n):
        draws = [samples[s, i] for s in range(n_samples)]
        mean = [sum(d[k] for d in draws) / n_samples for k in range(3)]
        std = [np.sqrt(sum((d[k] - mean[k]) ** 2 for d in draws) / n_samples) for k in range(3)]
        entropy = -sum(m * np.log(m) for m in mean if m > 0)
        expected_entropy = sum(-sum(p * np.log(p) for p in d if p > 0) for d in draws) / n_samples
        rows.append((mean, std, entropy, entropy - expected_entropy))
    return rows


def test_summaries_match_loops():
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 2, size=(40, 6, 3))
    samples = np.exp(logits) / np.exp(logits).sum(axis=2, keepdims=True)
    result = uncertainty.summarize_samples(samples)
    for i, (mean, std, entropy, information) in enumerate(_by_loops(samples)):
        np.testing.assert_allclose(result.mean[i], mean, rtol=1e-6)
        np.testing.assert_allclose(result.std[i], std, rtol=1e-5)
        assert result.entropy[i] == pytest.approx(entropy, rel=1e-6)
        assert result.mutual_information[i] == pytest.approx(information, rel=1e-5, abs=1e-7)
    np.testing.assert_allclose(uncertainty.mutual_information(samples), result.mutual_information, rtol=1e-6)
    assert result.samples is None and result.n_samples == 40
    kept = uncertainty.summarize_samples(samples, return_samples=True)
    assert kept.samples.shape == (40, 6, 3) and kept.samples.dtype == np.float32
    columns = result.columns()
    assert tuple(columns) == uncertainty.MC_COLUMNS
    np.testing.assert_array_equal(columns["p_indet_std"], result.std[:, 1])
    np.testing.assert_array_equal(columns["mutual_information"], result.mutual_information)


def test_mutual_information_separates_disagreement_from_ambiguity():
    ambiguous = np.full((10, 1, 3), 1 / 3)  # every draw unsure: all aleatoric
    disagreeing = np.eye(3)[np.arange(9) % 3][:, None, :]  # every draw sure, of different classes
    assert uncertainty.mutual_information(ambiguous)[0] == pytest.approx(0.0, abs=1e-12)
    assert uncertainty.mutual_information(disagreeing)[0] == pytest.approx(LN3)
    assert uncertainty.summarize_samples(ambiguous).entropy[0] == pytest.approx(LN3)


def test_bad_draws():
    with pytest.raises(ValueError, match=r"shape \(n_samples, n, 3\).*Received an array of shape \(4, 3\)"):
        uncertainty.summarize_samples(np.full((4, 3), 1 / 3))
    with pytest.raises(ValueError, match="at least one draw of one galaxy"):
        uncertainty.mutual_information(np.empty((0, 2, 3)))
    with pytest.raises(TypeError, match="real numbers"):
        uncertainty.summarize_samples(np.full((1, 1, 3), "a"))
    with pytest.raises(ValueError, match=r"shape \(n, 3\)"):
        uncertainty.predictive_entropy([[0.5, 0.5]])
    with pytest.raises(ValueError, match="empty"):
        uncertainty.predictive_entropy(np.empty((0, 3)))


# --------------------------------------------------------------------------- the dropout head

SHAPE = (40, 40, 1)
N_IMAGES = 2
REFERENCE_DRAWS = 300
DRAWS = 400


@pytest.fixture(scope="module")
def keras_network():
    """(images, weights, features (n, F), the three dense layers) of a Keras GaMorNet with known weights."""
    keras = pytest.importorskip("keras")
    from gamornet import keras_module

    images = reference.galaxy_images(N_IMAGES, SHAPE, seed=31)
    weights = reference.calibrated_weights(SHAPE, images, reference.lrn_keras, seed=32)
    model = keras_module.gamornet_build_model_keras(SHAPE)
    model.set_weights([array for pair in weights for array in pair])
    features = keras.Model(model.input, model.get_layer("flatten_1").output)(images).numpy()
    dense = [model.get_layer(f"dense_{index}") for index in (1, 2, 3)]
    return images, weights, features, dense


@pytest.fixture(scope="module")
def reference_draws(keras_network):
    """The numpy reference's MC draws of the Keras network's images: independent masks per draw and galaxy."""
    images, weights, _, _ = keras_network
    rng = np.random.default_rng(33)
    keep_1 = reference.dropout_keep_masks(rng, REFERENCE_DRAWS, N_IMAGES)
    keep_2 = reference.dropout_keep_masks(rng, REFERENCE_DRAWS, N_IMAGES)
    return reference.forward_mc(images, weights, keep_1, keep_2, reference.lrn_keras)


def test_head_with_given_masks_matches_the_reference(keras_network):
    images, weights, features, dense = keras_network
    n_samples = 7  # odd: the last pair loses its second draw
    rng = np.random.default_rng(34)
    pair_masks = rng.random((4, 4096)) >= 0.5
    keep_2 = rng.random((n_samples, 4096)) >= 0.5
    head = uncertainty.MCDropoutHead(dense, (0.5, 0.5), n_samples=n_samples, seed=0)
    got = head.with_masks(features, pair_masks, keep_2)
    # Draw 2k keeps pair_masks[k], draw 2k + 1 the other units; each draw's masks apply to every galaxy.
    keep_1 = np.stack([pair_masks, ~pair_masks], axis=1).reshape(8, 4096)[:n_samples]
    expected = reference.forward_mc(images, weights, np.repeat(keep_1[:, None], N_IMAGES, axis=1),
                                    np.repeat(keep_2[:, None], N_IMAGES, axis=1), reference.lrn_keras)
    assert got.shape == (n_samples, N_IMAGES, 3)
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_head_mc_mean_agrees_with_the_reference_within_the_monte_carlo_error(keras_network, reference_draws):
    images, weights, features, dense = keras_network
    expected = reference_draws
    draws = uncertainty.MCDropoutHead(dense, (0.5, 0.5), n_samples=DRAWS, seed=1)(features)
    # Draws come in complementary pairs: the pairs' means are independent, the draws of a pair are not.
    pair_means = draws.reshape(DRAWS // 2, 2, N_IMAGES, 3).mean(axis=1)
    standard_error = np.sqrt(pair_means.var(axis=0) / (DRAWS // 2) + expected.var(axis=0) / REFERENCE_DRAWS)
    difference = np.abs(draws.mean(axis=0) - expected.mean(axis=0))
    assert (difference < 4.5 * standard_error).all(), difference / standard_error
    # Dropout matters here: the MC mean is far from the deterministic prediction, and the spreads agree.
    deterministic = reference.forward(images, weights, reference.lrn_keras)
    assert (np.abs(draws.mean(axis=0) - deterministic).max(axis=1) > 10 * standard_error.max(axis=1)).all()
    np.testing.assert_allclose(draws.std(axis=0), expected.std(axis=0), rtol=0.2)


def test_the_same_seed_gives_the_same_draws(keras_network):
    _, _, features, dense = keras_network
    first = uncertainty.MCDropoutHead(dense, (0.5, 0.5), n_samples=5, seed=7)
    again = uncertainty.MCDropoutHead(dense, (0.5, 0.5), n_samples=5, seed=7)
    one, two = first(features), first(features)
    np.testing.assert_array_equal(one, again(features))
    np.testing.assert_array_equal(two, again(features))
    assert not np.array_equal(one, two)  # successive batches get fresh masks
    assert not np.array_equal(one, uncertainty.MCDropoutHead(dense, (0.5, 0.5), n_samples=5, seed=8)(features))
    unseeded = uncertainty.MCDropoutHead(dense, (0.5, 0.5), n_samples=5)
    assert not np.array_equal(unseeded(features), uncertainty.MCDropoutHead(dense, (0.5, 0.5), n_samples=5)(features))


@pytest.mark.parametrize("n_samples", [0, -1, 2.0, True, None])
def test_bad_n_samples(keras_network, n_samples):
    dense = keras_network[3]
    with pytest.raises(ValueError, match=f"n_samples must be an integer >= 1.*Received: n_samples={n_samples!r}"):
        uncertainty.MCDropoutHead(dense, (0.5, 0.5), n_samples=n_samples)


@pytest.mark.parametrize("seed", [-1, 1.5, "0"])
def test_bad_seed(keras_network, seed):
    with pytest.raises(ValueError, match=f"seed must be None or an integer >= 0. Received: seed={seed!r}"):
        uncertainty.MCDropoutHead(keras_network[3], (0.5, 0.5), n_samples=2, seed=seed)


def test_rates_other_than_gamornets_are_refused(keras_network):
    with pytest.raises(ValueError, match=r"dropout rates of 0.5. Received: \(0.3, 0.5\)"):
        uncertainty.MCDropoutHead(keras_network[3], (0.3, 0.5), n_samples=2)


# --------------------------------------------------------------------------- errors against uncertainty


def test_error_detection_auroc_counts_pairs():
    rng = np.random.default_rng(3)
    scores = np.round(rng.random(60), 1)  # many ties
    errors = rng.random(60) < 0.3
    pairs = [(1.0 if e > r else 0.5 if e == r else 0.0) for e in scores[errors] for r in scores[~errors]]
    assert uncertainty.error_detection_auroc(scores, errors) == pytest.approx(np.mean(pairs), abs=1e-12)
    assert uncertainty.error_detection_auroc([1, 2, 3], [True, False, False]) == 0.0
    assert uncertainty.error_detection_auroc([2, 2], [True, False]) == 0.5


def test_error_detection_auroc_bad_input():
    with pytest.raises(ValueError, match="1 misclassified and 0 correct"):
        uncertainty.error_detection_auroc([0.3], [True])
    with pytest.raises(ValueError, match=r"same length. Received shapes \(2,\) and \(3,\)"):
        uncertainty.error_detection_auroc([0.3, 0.2], [True, False, True])
    with pytest.raises(TypeError, match="booleans"):
        uncertainty.error_detection_auroc([0.3, 0.2], [1, 0])
    with pytest.raises(ValueError, match="finite"):
        uncertainty.error_detection_auroc([np.nan, 0.2], [True, False])
