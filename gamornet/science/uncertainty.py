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

import itertools
import numbers
from dataclasses import dataclass

import numpy as np

from gamornet.science._checks import check_probability_set

__all__ = [
    "MC_COLUMNS",
    "MCDropoutHead",
    "MCResult",
    "error_detection_auroc",
    "mutual_information",
    "predict_mc",
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
    >>> from gamornet.science.uncertainty import predictive_entropy
    >>> predictive_entropy([[1.0, 0.0, 0.0], [0.5, 0.5, 0.0]]).round(4).tolist()
    [0.0, 0.6931]
    """
    values, _ = check_probability_set(probabilities)
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
    >>> from gamornet.science.uncertainty import mutual_information
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
    >>> from gamornet.science.uncertainty import error_detection_auroc
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


def predict_mc(images, model, input_shape=None, backend="keras", n_samples=30, batch_size=64, seed=None,
               return_samples=False, progress=False):
    """Predict galaxies with MC dropout: probabilities with an uncertainty per galaxy.

    Each image is predicted ``n_samples`` times with GaMorNet's dropout layers
    on (a different random half of the units of the first two fully connected
    layers removed each time); the draws are summarised into a mean, a spread
    and two uncertainties (see the module's documentation). Dropout is on only
    here: :func:`gamornet.keras_module.gamornet_predict_keras` and
    ``gamornet predict`` without ``--mc-samples`` stay deterministic.

    Parameters
    ----------
    images : numpy.ndarray of shape (n, x, y, ndim)
        The images, with finite pixels, as the model takes them.
    model : str or os.PathLike
        A published model (``'SDSS_tl'`` ...) or a model file of ``backend``:
        a Keras ``.hdf5`` file, or a TFLearn checkpoint.
    input_shape : {'SDSS', 'CANDELS'} or tuple of int, optional
        Needed with a model file; published models know theirs.
    backend : {'keras', 'tflearn'}
        The flavour of the model.
    n_samples : int
        Draws per image, >= 1.
    batch_size : int
        Images per batch (the draws of a batch share their dropout masks).
    seed : int, optional
        The same seed, images and batch size give the same numbers; None: fresh draws.
    return_samples : bool
        Also return every draw (``samples``, of shape (n_samples, n, 3)).
    progress : bool
        Show a progress bar on standard error.

    Returns
    -------
    MCResult
        ``mean`` and ``std`` (n, 3), ``entropy`` and ``mutual_information`` (n,),
        and ``samples`` when asked for.

    Raises
    ------
    ValueError, TypeError
        ``n_samples`` < 1, a bad seed or batch size, an unknown backend, a
        missing input shape, images not of shape (n, x, y, ndim) of finite
        numbers, or an empty set of images.
    FileNotFoundError, gamornet.errors.ModelFileError
        As :func:`gamornet.load_predictor`.
    """
    from gamornet import models
    from gamornet._utils import checks as _checks
    from gamornet.inference.predictor import _resolve_shape, load_predictor

    n_samples = _check_n_samples(n_samples)
    seed = _check_seed(seed)
    batch_size = _checks.check_positive_int(batch_size, "batch_size")
    return_samples = _checks.check_flag(return_samples, "return_samples")
    if backend not in models.BACKENDS:
        raise ValueError(f"backend must be one of {models.BACKENDS}. Received: backend={backend!r}")
    shape = _resolve_shape(model, input_shape, backend)
    _checks.check_images(images, shape, "images")
    with load_predictor(model, shape, backend, mc_samples=n_samples, seed=seed) as predictor:
        return predictor.predict_mc(images, batch_size, progress=progress, return_samples=return_samples)


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


# Draws are made in blocks of _DRAWS_PER_PARTITION that share one random partition of the units of the first
# dense layer into _GROUPS groups (see MCDropoutHead).
_GROUPS = 8
_DRAWS_PER_PARTITION = 10

#: The 35 ways of splitting the 8 groups into two halves, as the half that holds group 0: (35, 8) booleans.
_HALVES = np.array([[group in half for group in range(_GROUPS)]
                    for half in itertools.combinations(range(_GROUPS), _GROUPS // 2) if 0 in half])


class MCDropoutHead:
    """The fully connected head of GaMorNet with its dropout on: ``n_samples`` draws per galaxy.

    Built from the three ``Dense`` layers of a Keras GaMorNet network and the
    rates of its two ``Dropout`` layers (0.5). Each draw is one network with
    its own dropout masks, applied to every galaxy of the batch, as in Gal &
    Ghahramani's view of a draw as a sample of the weights. Three things keep
    the cost of N draws close to that of one forward pass:

    - the convolutional layers and the first dense layer (no dropout before
      its output) run once per galaxy;
    - draws are made in blocks of 10. For each block, every unit of the first
      dense layer is put in one of 8 groups at random (independently, each
      group with probability 1/8), and the second dense layer's product is
      computed once, group by group (the rows of its weights gathered by
      group). Each draw keeps 4 of the 8 groups, so each unit independently
      with probability 1/2, exactly as dropout with rate 0.5 does; its
      product is the sum of those 4 groups' products, at no further cost;
    - the 10 draws of a block are 5 complementary pairs (antithetic sampling):
      5 distinct ways of keeping 4 groups, each followed by the other 4.

    Each draw is thus an exact dropout network (its masks have the
    distribution of independent draws), so the draws' mean converges to the
    same MC mean. Draws of a block are not independent of each other (blocks
    are): an estimate of the Monte-Carlo error of the mean should use the
    spread of the blocks' means.

    Parameters
    ----------
    dense_layers : sequence of 3 keras.layers.Dense
        The network's dense layers, in order (tanh, tanh, softmax).
    dropout_rates : sequence of 2 float
        The rates of the dropout after the first and the second dense layer.
        Must be 0.5, GaMorNet's (the scheme above needs it).
    n_samples : int
        Draws per galaxy (>= 1): ceil(n_samples / 10) blocks; the last one is
        cut short when n_samples is not a multiple of 10.
    seed : int or None
        Seeds the masks: the same seed and the same batches in the same order
        give the same draws. None: a fresh seed.

    Raises
    ------
    ValueError
        ``n_samples`` < 1, a bad seed, or rates other than 0.5.
    """

    def __init__(self, dense_layers, dropout_rates, n_samples, seed=None):
        from gamornet._utils.tf_logging import import_tensorflow

        tf = import_tensorflow()

        if len(dense_layers) != 3 or len(dropout_rates) != 2:
            raise ValueError(f"expected 3 dense layers and 2 dropout rates. Received {len(dense_layers)} and "
                             f"{len(dropout_rates)}")
        if tuple(float(rate) for rate in dropout_rates) != (0.5, 0.5):
            raise ValueError(f"MC dropout here needs GaMorNet's dropout rates of 0.5. Received: {tuple(dropout_rates)}")
        self.n_samples = _check_n_samples(n_samples)
        self.seed = _check_seed(seed)
        self._dense = list(dense_layers)
        self._blocks = -(-self.n_samples // _DRAWS_PER_PARTITION)
        if self.seed is None:
            self._generator = tf.random.Generator.from_non_deterministic_state()
        else:
            self._generator = tf.random.Generator.from_seed(self.seed)
        features, units_1 = (int(size) for size in self._dense[0].kernel.shape)
        units_2 = int(self._dense[1].kernel.shape[1])
        self._units = (units_1, units_2)
        self._halves = tf.constant(_HALVES)
        self._sample = tf.function(self._draws, input_signature=[tf.TensorSpec((None, features), tf.float32)])
        self._with_masks = tf.function(
            self._apply,
            input_signature=[tf.TensorSpec((None, features), tf.float32),
                             tf.TensorSpec((None, units_1), tf.int32),
                             tf.TensorSpec((None, _DRAWS_PER_PARTITION, _GROUPS), tf.bool),
                             tf.TensorSpec((None, _DRAWS_PER_PARTITION, units_2), tf.bool)],
        )

    @classmethod
    def from_head_layers(cls, layers, n_samples, seed=None):
        """The head of a GaMorNet network from its layers after the flatten.

        Parameters
        ----------
        layers : sequence of keras layers
            Dense, Dropout, Dense, Dropout, Dense, as in Table 2 of the paper.
        n_samples, seed
            As for the class.

        Raises
        ------
        ValueError
            Layers of another kind or order.
        """
        kinds = [type(layer).__name__ for layer in layers]
        if kinds != ["Dense", "Dropout", "Dense", "Dropout", "Dense"]:
            raise ValueError(f"expected GaMorNet's head: Dense, Dropout, Dense, Dropout, Dense. Received: {kinds}")
        return cls(layers[0::2], [layers[1].rate, layers[3].rate], n_samples, seed)

    def _apply(self, features, groups, kept_groups, keep_2):
        """Draws (n_samples, b, 3) from the masks of each block (see :meth:`with_masks`)."""
        import tensorflow as tf

        dense_1, dense_2, dense_3 = self._dense
        hidden = tf.tanh(tf.matmul(features, dense_1.kernel.value) + dense_1.bias.value)

        def block(masks):
            group_of_unit, kept, keep = masks
            # Units sorted by group: each group's rows of the second kernel are then one slice.
            order = tf.argsort(group_of_unit, stable=True)
            sorted_hidden = tf.gather(hidden, order, axis=1)
            sorted_kernel = tf.gather(dense_2.kernel.value, order)
            bounds = tf.concat([[0], tf.cumsum(tf.math.bincount(group_of_unit, minlength=_GROUPS,
                                                                maxlength=_GROUPS))], axis=0)
            products = tf.stack([tf.matmul(sorted_hidden[:, bounds[g]:bounds[g + 1]],
                                           sorted_kernel[bounds[g]:bounds[g + 1]]) for g in range(_GROUPS)])
            # Inverted dropout: kept units are scaled by 1 / (1 - 0.5) = 2.
            pre_activations = 2.0 * tf.einsum("dg,gbu->dbu", tf.cast(kept, tf.float32), products)
            dropped = tf.tanh(pre_activations + dense_2.bias.value) * (2.0 * tf.cast(keep, tf.float32))[:, None, :]
            logits = tf.einsum("dbu,uk->dbk", dropped, dense_3.kernel.value) + dense_3.bias.value
            return tf.nn.softmax(logits)

        batch = tf.shape(features)[0]
        draws = tf.map_fn(block, (groups, kept_groups, keep_2),
                          fn_output_signature=tf.TensorSpec((_DRAWS_PER_PARTITION, None, 3), tf.float32))
        return tf.reshape(draws, (-1, batch, 3))[: self.n_samples]

    def _draws(self, features):
        return self._apply(features, *self._masks())

    def _masks(self):
        """Fresh masks (groups, kept_groups, keep_2) for every block, as :meth:`with_masks` takes them."""
        import tensorflow as tf

        groups = self._generator.uniform((self._blocks, self._units[0]), 0, _GROUPS, dtype=tf.int32)
        # Per block, 5 distinct ways of keeping 4 groups, each followed by the other 4.
        chosen = tf.argsort(self._generator.uniform((self._blocks, len(_HALVES))), axis=1)
        halves = tf.gather(self._halves, chosen[:, : _DRAWS_PER_PARTITION // 2])
        kept_groups = tf.reshape(tf.stack([halves, tf.logical_not(halves)], axis=2),
                                 (self._blocks, _DRAWS_PER_PARTITION, _GROUPS))
        keep_2 = self._generator.uniform((self._blocks, _DRAWS_PER_PARTITION, self._units[1])) >= 0.5
        return groups, kept_groups, keep_2

    def __call__(self, features):
        """Draws (n_samples, b, 3), float32 numpy, for features (b, F) (the flattened convolutional output)."""
        return self._sample(np.asarray(features, dtype=np.float32)).numpy()

    def with_masks(self, features, groups, kept_groups, keep_2):
        """Draws with given masks, for tests.

        Parameters
        ----------
        features : array_like of shape (b, F)
        groups : array_like of int, shape (blocks, units_1)
            The group (0 to 7) of each unit of the first dense layer, per block
            of 10 draws; blocks = ceil(n_samples / 10).
        kept_groups : array_like of bool, shape (blocks, 10, 8)
            The groups each draw keeps.
        keep_2 : array_like of bool, shape (blocks, 10, units_2)
            The units of the second dense layer each draw keeps.

        Returns
        -------
        numpy.ndarray of shape (n_samples, b, 3)
            Draw ``10 * k + d`` keeps the units of the first dense layer whose
            group in ``groups[k]`` is kept by ``kept_groups[k, d]``, and
            ``keep_2[k, d]``.
        """
        return self._with_masks(np.asarray(features, np.float32), np.asarray(groups, np.int32),
                                np.asarray(kept_groups, bool), np.asarray(keep_2, bool)).numpy()
