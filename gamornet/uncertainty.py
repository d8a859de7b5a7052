"""Per-galaxy uncertainty from Monte-Carlo dropout.

GaMorNet has two dropout layers (rate 0.5), after its first two fully
connected layers (Ghosh et al. 2020, Table 2). Switched off for ordinary
predictions, they can be kept on to draw many predictions of the same galaxy,
each from a network with a random half of those units removed: Monte-Carlo
(MC) dropout (Gal & Ghahramani 2016), as GaMPEN and Zoobot do. The spread of
these draws measures how sure the network is of each galaxy:

- ``mean`` (n, 3): the average of the draws, the MC estimate of
  [p_disk, p_indet, p_bulge];
- ``std`` (n, 3): their standard deviation, per class;
- ``entropy`` (n,): the predictive entropy of ``mean``, in nats (0 for a
  certain prediction, ln 3 = 1.099 for [1/3, 1/3, 1/3]): all the uncertainty;
- ``mutual_information`` (n,): the predictive entropy minus the average
  entropy of the draws, the part of the uncertainty that comes from the
  network's weights (epistemic), not from the galaxy being ambiguous.

Dropout is on only inside :func:`predict_mc`; ordinary predictions stay
deterministic. The convolutional layers have no dropout, and neither has the
first fully connected layer before its output is dropped, so they run once
per galaxy; only the last two fully connected layers run once per draw.

The functions on arrays (:func:`predictive_entropy`,
:func:`mutual_information`, :func:`summarize_samples`) use numpy only.
"""

import numbers
from dataclasses import dataclass

import numpy as np

__all__ = [
    "MC_COLUMNS",
    "MCDropoutHead",
    "MCResult",
    "error_detection_auroc",
    "mutual_information",
    "predictive_entropy",
    "summarize_samples",
]

#: The per-galaxy columns that MC dropout adds to a predictions table, in order.
MC_COLUMNS = ("p_disk_std", "p_indet_std", "p_bulge_std", "entropy", "mutual_information")


def _check_samples(samples):
    samples = np.asarray(samples)
    if samples.dtype.kind not in "iuf":
        raise TypeError(f"samples must be real numbers. Received dtype {samples.dtype}")
    if samples.ndim != 3 or samples.shape[2] != 3:
        raise ValueError(
            "samples must have shape (n_samples, n, 3): [p_disk, p_indet, p_bulge] per draw and galaxy. "
            f"Received an array of shape {samples.shape}"
        )
    if samples.shape[0] == 0 or samples.shape[1] == 0:
        raise ValueError(f"samples must hold at least one draw of one galaxy. Received shape {samples.shape}")
    return samples.astype(np.float64)


def _entropy(probabilities):
    """-sum p ln p over the last axis, with 0 ln 0 = 0."""
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(probabilities > 0, probabilities * np.log(probabilities), 0.0)
    return 0.0 - terms.sum(axis=-1)  # not -sum: -0.0 for a certain prediction


def predictive_entropy(probabilities):
    """The entropy of each galaxy's class probabilities, in nats.

    Parameters
    ----------
    probabilities : array_like of shape (n, 3)
        [p_disk, p_indet, p_bulge] per galaxy (for MC dropout, the mean of the draws).

    Returns
    -------
    numpy.ndarray of shape (n,)
        ``-sum_k p_k ln p_k``: 0 when one class has probability 1, ln 3 when
        all three have 1/3.

    Raises
    ------
    ValueError
        Probabilities not of shape (n, 3), not in [0, 1] or not summing to 1,
        or an empty set.

    Examples
    --------
    >>> from gamornet.uncertainty import predictive_entropy
    >>> predictive_entropy([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]]).round(4).tolist()
    [0.0, 0.6931]
    """
    from gamornet.calibration import _check_set

    values, _ = _check_set(probabilities)
    return _entropy(values.astype(np.float64))


def mutual_information(samples):
    """The epistemic part of the uncertainty: the mutual information between the class and the weights.

    ``H[mean over draws of p] - mean over draws of H[p]`` (Gal 2016, Eq.
    3.20; the "BALD" score): large when the draws disagree with each other,
    0 when they all agree, however uncertain each is.

    Parameters
    ----------
    samples : array_like of shape (n_samples, n, 3)
        The draws: [p_disk, p_indet, p_bulge] per draw and galaxy.

    Returns
    -------
    numpy.ndarray of shape (n,)
        In nats, >= 0.

    Raises
    ------
    ValueError
        Samples not of shape (n_samples, n, 3), or empty.

    Examples
    --------
    >>> import numpy as np
    >>> from gamornet.uncertainty import mutual_information
    >>> agree = [[[0.5, 0.0, 0.5]], [[0.5, 0.0, 0.5]]]      # two draws, one galaxy
    >>> disagree = [[[1.0, 0.0, 0.0]], [[0.0, 0.0, 1.0]]]
    >>> np.round([mutual_information(agree)[0], mutual_information(disagree)[0]], 4).tolist()
    [0.0, 0.6931]
    """
    samples = _check_samples(samples)
    return _mutual_information(samples, samples.mean(axis=0))


def _mutual_information(samples, mean):
    # Rounding can make the difference of two equal entropies slightly negative.
    return np.maximum(_entropy(mean) - _entropy(samples).mean(axis=0), 0.0)


@dataclass(frozen=True)
class MCResult:
    """MC-dropout predictions of n galaxies (see :func:`predict_mc` and :func:`summarize_samples`).

    Attributes
    ----------
    mean : numpy.ndarray of shape (n, 3)
        The mean of the draws: [p_disk, p_indet, p_bulge].
    std : numpy.ndarray of shape (n, 3)
        The standard deviation of the draws, per class (over the draws, ddof=0).
    entropy : numpy.ndarray of shape (n,)
        The predictive entropy of ``mean``, in nats.
    mutual_information : numpy.ndarray of shape (n,)
        Its epistemic part, in nats.
    samples : numpy.ndarray of shape (n_samples, n, 3) or None
        The draws themselves, only when asked for.
    n_samples : int
        The number of draws.
    """

    mean: np.ndarray
    std: np.ndarray
    entropy: np.ndarray
    mutual_information: np.ndarray
    samples: object
    n_samples: int

    def columns(self):
        """The per-galaxy columns of a predictions table, as a dict of (n,) arrays named as in ``MC_COLUMNS``."""
        values = (self.std[:, 0], self.std[:, 1], self.std[:, 2], self.entropy, self.mutual_information)
        return dict(zip(MC_COLUMNS, values))


def summarize_samples(samples, return_samples=False):
    """Summarise MC-dropout draws into a mean, a spread, and the two uncertainties.

    Parameters
    ----------
    samples : array_like of shape (n_samples, n, 3)
        [p_disk, p_indet, p_bulge] per draw and galaxy.
    return_samples : bool
        Keep the draws in the result's ``samples``.

    Returns
    -------
    MCResult
        ``mean`` and ``std`` in float32, the uncertainties in float32.

    Raises
    ------
    ValueError
        Samples not of shape (n_samples, n, 3), or empty.
    """
    samples64 = _check_samples(samples)
    mean = samples64.mean(axis=0)
    return MCResult(
        mean=mean.astype(np.float32),
        std=samples64.std(axis=0).astype(np.float32),
        entropy=_entropy(mean).astype(np.float32),
        mutual_information=_mutual_information(samples64, mean).astype(np.float32),
        samples=np.asarray(samples, dtype=np.float32) if return_samples else None,
        n_samples=samples64.shape[0],
    )


def error_detection_auroc(uncertainty, is_error):
    """How well an uncertainty picks out misclassified galaxies: the area under the ROC curve.

    The probability that a misclassified galaxy, drawn at random, has a
    larger uncertainty than a correctly classified one (ties count one half):
    1 when every error is more uncertain than every right answer, 0.5 for an
    uncertainty that knows nothing of the errors (Mann-Whitney U / (n_error *
    n_right)).

    Parameters
    ----------
    uncertainty : array_like of shape (n,)
        Per galaxy: ``std`` of the top class, ``entropy``, ``mutual_information``...
    is_error : array_like of bool, shape (n,)
        Whether each galaxy is misclassified.

    Returns
    -------
    float

    Raises
    ------
    ValueError
        Arrays of other shapes or lengths, non-finite uncertainties, or no
        misclassified or no correctly classified galaxy.

    Examples
    --------
    >>> from gamornet.uncertainty import error_detection_auroc
    >>> error_detection_auroc([0.1, 0.4, 0.35, 0.8], [False, True, False, True])
    1.0
    """
    scores = np.asarray(uncertainty, dtype=np.float64)
    errors = np.asarray(is_error)
    if scores.ndim != 1 or errors.shape != scores.shape:
        raise ValueError(f"uncertainty and is_error must be 1-d arrays of the same length. Received shapes "
                         f"{scores.shape} and {errors.shape}")
    if errors.dtype != bool:
        raise TypeError(f"is_error must be booleans (True for a misclassified galaxy). Received dtype {errors.dtype}")
    if not np.isfinite(scores).all():
        raise ValueError("uncertainty must be finite numbers")
    n_errors, n_right = int(errors.sum()), int((~errors).sum())
    if n_errors == 0 or n_right == 0:
        raise ValueError(f"the AUROC needs misclassified and correctly classified galaxies. Received {n_errors} "
                         f"misclassified and {n_right} correct")
    # Mid-ranks of the scores (ties share the mean of their ranks).
    order = np.argsort(scores, kind="stable")
    sorted_scores = scores[order]
    starts = np.flatnonzero(np.r_[True, sorted_scores[1:] != sorted_scores[:-1]])
    ends = np.r_[starts[1:], len(scores)]
    mid_ranks = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    ranks = np.empty_like(mid_ranks)
    ranks[order] = mid_ranks
    u_statistic = ranks[errors].sum() - n_errors * (n_errors + 1) / 2.0
    return float(u_statistic / (n_errors * n_right))


def _check_n_samples(n_samples, name="n_samples"):
    """Check a number of MC draws: an integer >= 1."""
    if isinstance(n_samples, bool) or not isinstance(n_samples, numbers.Integral) or n_samples < 1:
        raise ValueError(f"{name} must be an integer >= 1 (the number of MC-dropout draws). "
                         f"Received: {name}={n_samples!r}")
    return int(n_samples)


def _check_seed(seed):
    """Check an MC-dropout seed: None (a fresh one each time) or an integer >= 0."""
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0):
        raise ValueError(f"seed must be None or an integer >= 0. Received: seed={seed!r}")
    return None if seed is None else int(seed)


class MCDropoutHead:
    """The fully connected head of GaMorNet with its dropout on: ``n_samples`` draws per galaxy.

    Built from the three ``Dense`` layers of a Keras GaMorNet network and the
    rates of its two ``Dropout`` layers (0.5). Each draw is one network with
    its own dropout masks, applied to every galaxy of the batch, as in Gal &
    Ghahramani's view of a draw as a sample of the weights. Three things keep
    the cost of N draws far below N forward passes:

    - the convolutional layers and the first dense layer (no dropout before
      its output) run once per galaxy;
    - the second dense layer multiplies only the units a draw keeps (half of
      them): rows of its weights are gathered per draw;
    - draws come in complementary pairs (antithetic sampling): a mask that
      keeps a set of units, then the mask that keeps the others, equally
      likely under a rate of 0.5. The second of a pair costs nothing more,
      being the full product (computed once per galaxy) minus the first.

    Each draw is an exact dropout network, so their mean converges to the MC
    mean of independent draws; draws of a pair are not independent of each
    other (pairs are), which usually makes the mean more precise.

    Parameters
    ----------
    dense_layers : sequence of 3 keras.layers.Dense
        The network's dense layers, in order (tanh, tanh, softmax).
    dropout_rates : sequence of 2 float
        The rates of the dropout after the first and the second dense layer.
        Must be 0.5, GaMorNet's (complementary masks are equally likely only then).
    n_samples : int
        Draws per galaxy (>= 1). An odd number drops the last draw of the last pair.
    seed : int or None
        Seeds the masks: the same seed and the same batches in the same order
        give the same draws. None: a fresh seed.

    Raises
    ------
    ValueError
        ``n_samples`` < 1, a bad seed, or rates other than 0.5.
    """

    def __init__(self, dense_layers, dropout_rates, n_samples, seed=None):
        import tensorflow as tf

        if len(dense_layers) != 3 or len(dropout_rates) != 2:
            raise ValueError(f"expected 3 dense layers and 2 dropout rates. Received {len(dense_layers)} and "
                             f"{len(dropout_rates)}")
        if tuple(float(rate) for rate in dropout_rates) != (0.5, 0.5):
            raise ValueError(f"MC dropout here needs GaMorNet's dropout rates of 0.5. Received: {tuple(dropout_rates)}")
        self.n_samples = _check_n_samples(n_samples)
        self.seed = _check_seed(seed)
        self._dense = list(dense_layers)
        self._pairs = (self.n_samples + 1) // 2
        if self.seed is None:
            self._generator = tf.random.Generator.from_non_deterministic_state()
        else:
            self._generator = tf.random.Generator.from_seed(self.seed)
        features, units_1 = (int(size) for size in self._dense[0].kernel.shape)
        units_2 = int(self._dense[1].kernel.shape[1])
        self._units = (units_1, units_2)
        self._sample = tf.function(self._draws, input_signature=[tf.TensorSpec((None, features), tf.float32)])
        self._with_masks = tf.function(
            self._apply,
            input_signature=[tf.TensorSpec((None, features), tf.float32),
                             tf.TensorSpec((None, units_1), tf.bool),
                             tf.TensorSpec((None, units_2), tf.bool)],
        )

    def _apply(self, features, keep_1, keep_2):
        """Draws (n_samples, b, 3) from pair masks keep_1 (pairs, units_1) and keep_2 (n_samples, units_2)."""
        import tensorflow as tf

        dense_1, dense_2, dense_3 = self._dense
        kernel_2 = dense_2.kernel.value
        hidden = tf.tanh(tf.matmul(features, dense_1.kernel.value) + dense_1.bias.value)
        full = tf.matmul(hidden, kernel_2)

        def kept_product(mask):
            kept = tf.where(mask)[:, 0]
            return tf.matmul(tf.gather(hidden, kept, axis=1), tf.gather(kernel_2, kept))

        kept = tf.map_fn(kept_product, keep_1, fn_output_signature=tf.TensorSpec((None, self._units[1]), tf.float32))
        # Inverted dropout: kept units are scaled by 1 / (1 - 0.5) = 2.
        pairs = tf.stack([2.0 * kept, 2.0 * (full[None] - kept)], axis=1) + dense_2.bias.value
        batch = tf.shape(features)[0]
        pre_activations = tf.reshape(pairs, (-1, batch, self._units[1]))[: self.n_samples]
        hidden = tf.tanh(pre_activations) * (2.0 * tf.cast(keep_2, tf.float32))[:, None, :]
        logits = tf.einsum("sbu,uk->sbk", hidden, dense_3.kernel.value) + dense_3.bias.value
        return tf.nn.softmax(logits)

    def _draws(self, features):
        keep_1 = self._generator.uniform((self._pairs, self._units[0])) >= 0.5
        keep_2 = self._generator.uniform((self.n_samples, self._units[1])) >= 0.5
        return self._apply(features, keep_1, keep_2)

    def __call__(self, features):
        """Draws (n_samples, b, 3), float32 numpy, for features (b, F) (the flattened convolutional output)."""
        return self._sample(np.asarray(features, dtype=np.float32)).numpy()

    def with_masks(self, features, keep_1, keep_2):
        """Draws with given masks (True: kept), for tests.

        Parameters
        ----------
        features : array_like of shape (b, F)
        keep_1 : array_like of bool, shape (ceil(n_samples / 2), units_1)
            The first mask of each pair after the first dense layer; draw
            ``2k`` keeps ``keep_1[k]``, draw ``2k + 1`` its complement.
        keep_2 : array_like of bool, shape (n_samples, units_2)
            The mask of each draw after the second dense layer.

        Returns
        -------
        numpy.ndarray of shape (n_samples, b, 3)
        """
        return self._with_masks(np.asarray(features, np.float32), np.asarray(keep_1, bool),
                                np.asarray(keep_2, bool)).numpy()
