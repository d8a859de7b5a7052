"""gamornet.science.uncertainty: the MC-dropout summaries, and the dropout head against the numpy reference."""

from types import SimpleNamespace

import numpy as np
import pytest

import reference
from gamornet.inference import mc_dropout
from gamornet.inference.predictor import predict_mc
from gamornet.science import uncertainty

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
REFERENCE_DRAWS = 250
DRAWS = 400


class _Models:
    """images, and per backend (attributes ``keras`` and ``tflearn``, made on first use): known weights calibrated
    for its LRN flavour, its LRN, and its model file."""

    def __init__(self, folder):
        self.folder = folder
        self.images = reference.galaxy_images(N_IMAGES, SHAPE, seed=31)
        self._made = {}

    def _make(self, backend):
        if backend not in self._made:
            from legacy_files import write_keras2_file
            from tflearn_files import write_tflearn_checkpoint

            lrn = reference.lrn_keras if backend == "keras" else reference.lrn_tflearn
            weights = reference.calibrated_weights(SHAPE, self.images, lrn, seed=32 if backend == "keras" else 33)
            if backend == "keras":
                path = write_keras2_file(str(self.folder / "model.hdf5"), weights)
            else:
                path = write_tflearn_checkpoint(str(self.folder / "check-1"), weights, SHAPE)
            self._made[backend] = SimpleNamespace(weights=weights, lrn=lrn, path=path)
        return self._made[backend]

    @property
    def keras(self):
        return self._make("keras")

    @property
    def tflearn(self):
        return self._make("tflearn")


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """The Keras and TFLearn model files of known weights (the TFLearn one written only when a test uses it)."""
    pytest.importorskip("keras")
    return _Models(tmp_path_factory.mktemp("mc-models"))


@pytest.fixture(scope="module")
def keras_network(models):
    """features (n, F), the three dense layers and the layers after the flatten of the Keras model's engine."""
    import gamornet

    with gamornet.load_predictor(models.keras.path, SHAPE, "keras") as predictor:
        engine = predictor.engine
        features = engine.features(models.images)
    dense = [layer for layer in engine.head_layers if type(layer).__name__ == "Dense"]
    return SimpleNamespace(features=features, dense=dense, head_layers=engine.head_layers)


@pytest.mark.numeric
def test_head_with_given_masks_matches_the_reference(models, keras_network):
    n_samples = 13  # two blocks of 10 draws, the second cut short
    rng = np.random.default_rng(34)
    groups = rng.integers(0, 8, size=(2, 4096))
    kept_groups = rng.random((2, 10, 8)) >= 0.5
    keep_2 = rng.random((2, 10, 4096)) >= 0.5
    head = mc_dropout.MCDropoutHead(keras_network.dense, (0.5, 0.5), n_samples=n_samples, seed=0)
    got = head.with_masks(keras_network.features, groups, kept_groups, keep_2)
    # Draw 10k + d keeps the units whose group in block k it keeps; its masks apply to every galaxy.
    keep_1 = np.array([kept_groups[k, d][groups[k]] for k in range(2) for d in range(10)])[:n_samples]
    keep_2 = keep_2.reshape(20, 4096)[:n_samples]
    expected = reference.forward_mc(models.images, models.keras.weights, np.repeat(keep_1[:, None], N_IMAGES, axis=1),
                                    np.repeat(keep_2[:, None], N_IMAGES, axis=1), reference.lrn_keras)
    assert got.shape == (n_samples, N_IMAGES, 3)
    np.testing.assert_allclose(got, expected, atol=1e-4)


def test_the_masks_of_the_draws_are_those_of_dropout(keras_network):
    """Each draw keeps 4 of 8 groups: half the units, each independently; 10 draws per block, 5 complementary pairs."""
    head = mc_dropout.MCDropoutHead(keras_network.dense, (0.5, 0.5), n_samples=20, seed=2)
    groups, kept, keep_2 = (mask.numpy() for mask in head._masks())
    assert groups.shape == (2, 4096) and kept.shape == (2, 10, 8)
    assert (kept.sum(axis=2) == 4).all()
    assert (kept[:, 0::2] == ~kept[:, 1::2]).all()
    assert all(len({tuple(row) for row in block}) == 10 for block in kept)  # distinct within a block
    keep_1 = np.array([kept[k, d][groups[k]] for k in range(2) for d in range(10)])
    # Fractions kept: 0.5 within binomial noise (sd 0.008 for 4096 units), and no unit correlation beyond chance.
    assert np.abs(keep_1.mean(axis=1) - 0.5).max() < 0.04
    assert keep_2.shape == (2, 10, 4096) and np.abs(keep_2.mean() - 0.5) < 0.01
    # Draws of different blocks are independent: about 1/4 of the units kept by both (sd 0.007).
    assert abs((keep_1[0] & keep_1[10]).mean() - 0.25) < 0.03
    # Within a block, a draw and its complement share nothing.
    assert not (keep_1[0] & keep_1[1]).any()


# Agreement within the MC error does not depend on TensorFlow's rounding: not in the numeric set.
@pytest.mark.parametrize("backend", ["keras", "tflearn"])
def test_mc_mean_agrees_with_the_reference_within_the_monte_carlo_error(models, backend):
    """predict_mc of each backend's model file against the numpy reference with independent masks per galaxy."""
    case = getattr(models, backend)
    rng = np.random.default_rng(35)
    expected = reference.forward_mc(models.images, case.weights,
                                    reference.dropout_keep_masks(rng, REFERENCE_DRAWS, N_IMAGES),
                                    reference.dropout_keep_masks(rng, REFERENCE_DRAWS, N_IMAGES), case.lrn)
    result = predict_mc(models.images, case.path, SHAPE, backend, n_samples=DRAWS, seed=1,
                                    return_samples=True)
    draws = result.samples
    # Draws come in blocks of 10: the blocks' means are independent, the draws of a block are not.
    block_means = draws.reshape(DRAWS // 10, 10, N_IMAGES, 3).mean(axis=1)
    standard_error = np.sqrt(block_means.var(axis=0) / (DRAWS // 10) + expected.var(axis=0) / REFERENCE_DRAWS)
    difference = np.abs(result.mean - expected.mean(axis=0))
    assert (difference < 4.5 * standard_error).all(), difference / standard_error
    # The spreads agree too, and are large: dropout is on (without it, std would be 0).
    np.testing.assert_allclose(result.std, expected.std(axis=0), rtol=0.2)
    assert (result.std.max(axis=1) > 0.1).all()
    # The summaries are those of the draws.
    np.testing.assert_allclose(result.mean, draws.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(result.mutual_information, uncertainty.mutual_information(draws), rtol=1e-4, atol=1e-6)


def test_predict_mc_is_reproducible_and_leaves_plain_predictions_deterministic(models):
    import gamornet

    with gamornet.load_predictor(models.keras.path, SHAPE) as plain:
        before = plain.predict(models.images)
    one = predict_mc(models.images, models.keras.path, SHAPE, n_samples=6, seed=7, batch_size=1)
    two = predict_mc(models.images, models.keras.path, SHAPE, n_samples=6, seed=7, batch_size=1)
    other = predict_mc(models.images, models.keras.path, SHAPE, n_samples=6, seed=8, batch_size=1)
    for name in ("mean", "std", "entropy", "mutual_information"):
        np.testing.assert_array_equal(getattr(one, name), getattr(two, name))
    assert not np.array_equal(one.mean, other.mean)
    assert one.samples is None and one.mean.shape == (N_IMAGES, 3) and one.entropy.shape == (N_IMAGES,)
    with gamornet.load_predictor(models.keras.path, SHAPE) as plain:
        np.testing.assert_array_equal(plain.predict(models.images), before)
    np.testing.assert_allclose(before, reference.forward(models.images, models.keras.weights), atol=1e-4)


def test_the_predictor_adds_the_mc_columns(models):
    import gamornet

    with gamornet.load_predictor(models.tflearn.path, SHAPE, "tflearn", mc_samples=4, seed=3) as predictor:
        assert predictor.columns == uncertainty.MC_COLUMNS
        assert predictor.provenance()["mc_samples"] == 4 and predictor.provenance()["mc_seed"] == 3
        result = predictor.predict_batch(models.images)
        assert set(result.columns) == set(uncertainty.MC_COLUMNS) and result.draws.shape == (4, N_IMAGES, 3)
        np.testing.assert_allclose(result.probabilities, result.draws.mean(axis=0), rtol=1e-5)
        np.testing.assert_allclose(result.columns["p_bulge_std"], result.draws[:, :, 2].std(axis=0), rtol=1e-4)
        empty = predictor.predict_batch(np.empty((0,) + SHAPE, np.float32))
        assert empty.draws.shape == (4, 0, 3) and empty.columns["entropy"].shape == (0,)
    with gamornet.load_predictor(models.keras.path, SHAPE) as plain:
        assert plain.columns == () and plain.predict_batch(models.images).draws is None
        with pytest.raises(ValueError, match="load it with mc_samples >= 2"):
            plain.predict_mc(models.images)


def test_the_same_seed_gives_the_same_draws(keras_network):
    features, dense = keras_network.features, keras_network.dense
    first = mc_dropout.MCDropoutHead(dense, (0.5, 0.5), n_samples=5, seed=7)
    again = mc_dropout.MCDropoutHead(dense, (0.5, 0.5), n_samples=5, seed=7)
    one, two = first(features), first(features)
    np.testing.assert_array_equal(one, again(features))
    np.testing.assert_array_equal(two, again(features))
    assert not np.array_equal(one, two)  # successive batches get fresh masks
    assert not np.array_equal(one, mc_dropout.MCDropoutHead(dense, (0.5, 0.5), n_samples=5, seed=8)(features))
    unseeded = mc_dropout.MCDropoutHead(dense, (0.5, 0.5), n_samples=5)
    assert not np.array_equal(unseeded(features), mc_dropout.MCDropoutHead(dense, (0.5, 0.5), n_samples=5)(features))


def test_head_from_the_layers_after_the_flatten(keras_network):
    features, layers = keras_network.features, keras_network.head_layers
    from_layers = mc_dropout.MCDropoutHead.from_head_layers(layers, n_samples=3, seed=5)
    direct = mc_dropout.MCDropoutHead(keras_network.dense, (0.5, 0.5), 3, seed=5)
    np.testing.assert_array_equal(from_layers(features), direct(features))
    with pytest.raises(ValueError, match="expected GaMorNet's head: Dense, Dropout, Dense, Dropout, Dense"):
        mc_dropout.MCDropoutHead.from_head_layers(layers[:-1], n_samples=3)


@pytest.mark.parametrize("n_samples", [0, 1, -1, 2.0, True, None, 1001])
def test_bad_n_samples(models, keras_network, n_samples):
    message = (f"n_samples must be an integer >= 2.*one draw has no spread.*Received: n_samples={n_samples!r}"
               if n_samples != 1001 else r"n_samples must be at most 1000: the Monte Carlo error.*Received")
    with pytest.raises(ValueError, match=message):
        mc_dropout.MCDropoutHead(keras_network.dense, (0.5, 0.5), n_samples=n_samples)
    with pytest.raises(ValueError, match=message):
        predict_mc(models.images, models.keras.path, SHAPE, n_samples=n_samples)


@pytest.mark.parametrize("seed", [-1, 1.5, "0"])
def test_bad_seed(models, keras_network, seed):
    message = f"seed must be None or an integer >= 0. Received: seed={seed!r}"
    with pytest.raises(ValueError, match=message):
        mc_dropout.MCDropoutHead(keras_network.dense, (0.5, 0.5), n_samples=2, seed=seed)
    with pytest.raises(ValueError, match=message):
        predict_mc(models.images, models.keras.path, SHAPE, seed=seed)


def test_bad_arguments_of_predict_mc(models, keras_network, tmp_path):
    import gamornet

    with pytest.raises(ValueError, match=r"dropout rates of 0.5. Received: \(0.3, 0.5\)"):
        mc_dropout.MCDropoutHead(keras_network.dense, (0.3, 0.5), n_samples=2)
    with pytest.raises(ValueError, match=r"images holds no images. Received an array of shape \(0, 40, 40, 1\)"):
        predict_mc(np.empty((0,) + SHAPE, np.float32), models.keras.path, SHAPE)
    with pytest.raises(ValueError, match=r"\(40, 40, 1\)"):
        predict_mc(np.zeros((2, 30, 30, 1), np.float32), models.keras.path, SHAPE)
    with pytest.raises(ValueError, match="input_shape is needed with a model file"):
        predict_mc(models.images, models.keras.path)
    from gamornet.keras_module import gamornet_build_model_keras

    network = gamornet_build_model_keras(SHAPE)  # a Keras model, not a file
    with pytest.raises(TypeError, match="path of a model file or one of 'SDSS_sim'.*Received an object of type Functional"):
        predict_mc(models.images, network)
    with pytest.raises(TypeError, match="Received an object of type Functional"):
        gamornet.load_predictor(network)
    with pytest.raises(ValueError, match="backend must be one of"):
        predict_mc(models.images, models.keras.path, SHAPE, backend="torch")
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        predict_mc(models.images, models.keras.path, SHAPE, batch_size=0)
    with pytest.raises(TypeError, match="return_samples must be True or False"):
        predict_mc(models.images, models.keras.path, SHAPE, return_samples="yes")
    with pytest.raises(FileNotFoundError):
        predict_mc(models.images, str(tmp_path / "missing.hdf5"), SHAPE)
    with pytest.raises(ValueError, match="mc_samples must be a non-negative integer"):
        gamornet.load_predictor(models.keras.path, SHAPE, mc_samples=-1)


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


def test_gamornet_predict_with_mc_samples_writes_the_mc_columns(models, tmp_path, capsys):
    import csv

    from gamornet.cli import main as cli

    stack = tmp_path / "images.npy"
    np.save(stack, models.images)
    output = tmp_path / "mc.csv"
    assert cli.main(["predict", str(stack), "--model", models.keras.path, "--input-shape", "40,40,1",
                     "--thresholds", "0.5,0.5", "--mc-samples", "6", "--seed", "4", "--output", str(output),
                     "--no-progress"]) == 0
    with open(output, newline="") as stream:
        rows = list(csv.DictReader(stream))
    assert tuple(rows[0])[-5:] == uncertainty.MC_COLUMNS and len(rows) == N_IMAGES
    # The same draws as predict_mc with the same seed and batches.
    expected = predict_mc(models.images, models.keras.path, SHAPE, n_samples=6, seed=4)
    np.testing.assert_allclose([[float(row[name]) for name in ("p_disk", "p_indet", "p_bulge")] for row in rows],
                               expected.mean, rtol=1e-6)
    np.testing.assert_allclose([float(row["mutual_information"]) for row in rows], expected.mutual_information,
                               rtol=1e-5)
    assert cli.main(["predict", str(stack), "--model", models.keras.path, "--input-shape", "40,40,1",
                     "--thresholds", "0.5,0.5", "--mc-samples", "-2"]) == 1
    assert "--mc-samples must be a non-negative integer" in capsys.readouterr().err
