"""Monte-Carlo dropout: many predictions of each galaxy, each with a random half of the dense units removed.

GaMorNet has two dropout layers (rate 0.5), after its first two fully
connected layers (Ghosh et al. 2020, Table 2). The convolutional layers have
no dropout, and neither has the first fully connected layer before its output
is dropped, so they run once per galaxy; only the last two fully connected
layers run once per draw (:class:`MCDropoutHead`). The predictor runs it with
``mc_samples``; :func:`gamornet.inference.predictor.predict_mc` is the one-call form. The draws are
summarised by :func:`gamornet.science.uncertainty.summarize_samples`, which
also documents the columns.
"""

import itertools
import numbers

import numpy as np

from gamornet._utils import checks as _checks

__all__ = ["MAX_MC_SAMPLES", "MCDropoutHead", "check_n_samples"]

#: The most MC-dropout draws per image. The Monte Carlo error of a mean probability is at most 0.5 / sqrt(N):
#: 0.016 at 1000 draws, well below the spread the draws measure, while the time and memory of a batch grow in
#: proportion to N (100000 draws of 2 images took 3.8 GB).
MAX_MC_SAMPLES = 1000


def check_n_samples(n_samples, name="n_samples"):
    """Check a number of MC draws: an integer from 2 to :data:`MAX_MC_SAMPLES`.

    One draw has no spread: its standard deviation and mutual information would be 0, which reads as certainty.
    """
    if isinstance(n_samples, bool) or not isinstance(n_samples, numbers.Integral) or n_samples < 2:
        raise ValueError(f"{name} must be an integer >= 2 (the number of MC-dropout draws; one draw has no spread, "
                         f"so its std and mutual information would be 0, which reads as certainty). "
                         f"Received: {name}={n_samples!r}")
    if n_samples > MAX_MC_SAMPLES:
        raise ValueError(f"{name} must be at most {MAX_MC_SAMPLES}: the Monte Carlo error of a mean probability is "
                         f"at most 0.5/sqrt(N), 0.016 at {MAX_MC_SAMPLES} draws, while time and memory grow in "
                         f"proportion to N. Received: {name}={n_samples!r}")
    return int(n_samples)


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
        self.n_samples = check_n_samples(n_samples)
        self.seed = _checks.check_seed(seed, allow_none=True)
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
