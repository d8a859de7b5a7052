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

__all__ = ["MC_COLUMNS", "MCDropoutHead", "MCResult", "mutual_information", "predictive_entropy", "summarize_samples"]

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
    return -terms.sum(axis=-1)


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
    """The fully connected head of GaMorNet with its dropout on: n_samples draws per galaxy.

    Built from the three ``Dense`` layers (and the rates of the two
    ``Dropout`` layers) of a Keras GaMorNet network. The first dense layer
    runs once per galaxy; the dropout masks, the second and third dense layers
    run once per draw, all draws of a batch in one matrix product.

    Parameters
    ----------
    dense_layers : sequence of 3 keras.layers.Dense
        The network's dense layers, in order (tanh, tanh, softmax).
    dropout_rates : sequence of 2 float
        The rates of the dropout after the first and second dense layers.
    n_samples : int
        Draws per galaxy.
    seed : int or None
        Seeds the masks: the same seed and the same batches in the same order
        give the same draws. None: a fresh seed.
    """

    def __init__(self, dense_layers, dropout_rates, n_samples, seed=None):
        import tensorflow as tf

        if len(dense_layers) != 3 or len(dropout_rates) != 2:
            raise ValueError(f"expected 3 dense layers and 2 dropout rates. Received {len(dense_layers)} and "
                             f"{len(dropout_rates)}")
        self.n_samples = _check_n_samples(n_samples)
        self.seed = _check_seed(seed)
        self._dense = list(dense_layers)
        self._rates = tuple(float(rate) for rate in dropout_rates)
        if self.seed is None:
            self._generator = tf.random.Generator.from_non_deterministic_state()
        else:
            self._generator = tf.random.Generator.from_seed(self.seed)
        units = int(self._dense[0].kernel.shape[1])
        features = int(self._dense[0].kernel.shape[0])
        self._sample = tf.function(self._draws, input_signature=[tf.TensorSpec((None, features), tf.float32)])
        self._with_masks = tf.function(
            self._apply,
            input_signature=[tf.TensorSpec((None, features), tf.float32),
                             tf.TensorSpec((None, None, units), tf.float32),
                             tf.TensorSpec((None, None, int(self._dense[1].kernel.shape[1])), tf.float32)],
        )

    def _apply(self, features, keep_1, keep_2):
        """Draws (n_samples, b, 3) with the given keep masks (n_samples, b, units), 1 kept, 0 dropped."""
        import tensorflow as tf

        (dense_1, dense_2, dense_3), (rate_1, rate_2) = self._dense, self._rates
        hidden = tf.tanh(tf.matmul(features, dense_1.kernel.value) + dense_1.bias.value)
        samples, batch = tf.shape(keep_1)[0], tf.shape(features)[0]
        units = tf.shape(hidden)[1]
        dropped = hidden[None] * keep_1 * (1.0 / (1.0 - rate_1))
        hidden = tf.tanh(tf.matmul(tf.reshape(dropped, (samples * batch, units)), dense_2.kernel.value)
                         + dense_2.bias.value)
        dropped = tf.reshape(hidden, (samples, batch, -1)) * keep_2 * (1.0 / (1.0 - rate_2))
        logits = tf.matmul(tf.reshape(dropped, (samples * batch, -1)), dense_3.kernel.value) + dense_3.bias.value
        return tf.reshape(tf.nn.softmax(logits), (samples, batch, 3))

    def _draws(self, features):
        import tensorflow as tf

        batch = tf.shape(features)[0]
        shape_1 = (self.n_samples, batch, int(self._dense[0].kernel.shape[1]))
        shape_2 = (self.n_samples, batch, int(self._dense[1].kernel.shape[1]))
        keep_1 = tf.cast(self._generator.uniform(shape_1) >= self._rates[0], tf.float32)
        keep_2 = tf.cast(self._generator.uniform(shape_2) >= self._rates[1], tf.float32)
        return self._apply(features, keep_1, keep_2)

    def __call__(self, features):
        """Draws (n_samples, b, 3), float32 numpy, for features (b, F) (the flattened convolutional output)."""
        return self._sample(np.asarray(features, dtype=np.float32)).numpy()

    def with_masks(self, features, keep_1, keep_2):
        """Draws (n_samples, b, 3) with given keep masks (1 kept, 0 dropped), each (n_samples, b, units)."""
        return self._with_masks(np.asarray(features, np.float32), np.asarray(keep_1, np.float32),
                                np.asarray(keep_2, np.float32)).numpy()
