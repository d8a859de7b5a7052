"""The bfloat16 engine, and the boundary refinement that predicts again in fp32 the galaxies near a class boundary.

:class:`KerasEngine` runs a GaMorNet network with Keras, in fp32 (the network as
it is) or in bf16: Keras' bfloat16 policy (8-bit mantissa) for every layer but
the first convolution (which sees the raw pixel values), the local response
normalisations (TensorFlow has no bfloat16 CPU kernel of TFLearn's) and the
last dense layer with its softmax. bfloat16 moves a probability by up to about
0.01, which would change the class of a few galaxies in a thousand; so the
galaxies whose class is decided by less than :data:`BF16_MARGIN` under the
class rules in use (:func:`gamornet.science.classify.near_boundaries`) are
predicted again in fp32 (:class:`Refinement`), and keep fp32's probabilities
and class.

Backend-neutral at import: TensorFlow and Keras are imported only when an
engine is made.
"""

import dataclasses

import numpy as np

from gamornet.inference.engine_checks import check_batch, check_network, check_precision, layer_roles
from gamornet.science.classify import HANDBOOK_THRESHOLDS, MOST_PROBABLE, check_margin, near_boundaries, resolve_rules

__all__ = ["BF16_MARGIN", "DEFAULT_REFINED_RULES", "REFINE_BATCH", "MAX_WAITING_IMAGES", "Refinement", "KerasEngine"]

# Layers kept in fp32 by bf16, by their role in the network (see gamornet.inference.engine_checks.layer_roles): on
# a trained network these are the layers whose rounding changed the most classes (docs/speed.rst).
_BF16_FP32_ROLES = ("conv_1", "lrn", "dense_3")

#: How far (in probability) a bf16 class decision must be from a boundary for its bf16 probabilities to be kept:
#: about twice the largest difference from fp32 measured on a trained network (docs/speed.rst).
BF16_MARGIN = 0.02

#: bf16 predicts the images near a boundary again in fp32 in batches of this many, collected over several batches;
#: batches are held back until their images are refined, at most this many images' worth.
REFINE_BATCH = 64
MAX_WAITING_IMAGES = 1024

#: The class rules bf16 protects when none are given and the images are of neither handbook data set (SDSS, CANDELS):
#: the most probable class and the four handbook sets. For SDSS and CANDELS images the predictor protects the most
#: probable class and the handbook set of the backend and data set (see gamornet.load_predictor).
DEFAULT_REFINED_RULES = (MOST_PROBABLE,) + tuple(HANDBOOK_THRESHOLDS)


@dataclasses.dataclass(frozen=True)
class Refinement:
    """Which bf16 predictions are made again in fp32: those of galaxies near a class boundary.

    Parameters
    ----------
    rules : tuple
        The class rules the probabilities will be classified with:
        ``'most_probable'`` and threshold sets as
        :func:`gamornet.science.classify.near_boundaries` takes them (default: the
        most probable class and the four handbook sets).
    margin : float
        A galaxy whose class, under some rule, is decided by less than this
        (in probability; twice this between two probabilities) is predicted
        again in fp32 (default :data:`BF16_MARGIN`).
    transform : callable, optional
        Applied to the probabilities before they are compared with the rules:
        the calibration's temperature when predictions are calibrated, so
        that the rules see the probabilities they will classify.

    Raises
    ------
    ValueError, TypeError
        An unknown rule, or a margin outside (0, 0.5).
    """

    rules: tuple = DEFAULT_REFINED_RULES
    margin: float = BF16_MARGIN
    transform: object = None

    def __post_init__(self):
        object.__setattr__(self, "rules", resolve_rules(self.rules))
        object.__setattr__(self, "margin", check_margin(self.margin))
        if self.transform is not None and not callable(self.transform):
            raise TypeError("transform must be callable or None. Received an object of type "
                            f"{type(self.transform).__name__}")

    def mask(self, probabilities):
        """(n,) bool: the galaxies of ``probabilities`` (n, 3) to predict again in fp32."""
        if self.transform is not None:
            probabilities = self.transform(probabilities)
        return near_boundaries(probabilities, self.rules, self.margin)

    def describe(self):
        """The rules and margin, as plain values (for the provenance of a table)."""
        rules = [rule if isinstance(rule, str) else {"disk": rule.disk, "bulge": rule.bulge,
                                                     "disk_must_lead": bool(rule.disk_must_lead)}
                 for rule in self.rules]  # fmt: skip
        return {"rules": rules, "margin": self.margin}


class KerasEngine:
    """The fp32 or bf16 engine: the Keras network, run by compiled TensorFlow functions.

    It has the steps of the predictor's engine (:class:`gamornet.inference._engine.Engine`):
    :meth:`forward`, and ``features`` / ``head`` for Monte-Carlo dropout.

    Parameters
    ----------
    network : keras.Model
        A built GaMorNet network with its weights.
    precision : {'fp32', 'bf16'}
        ``'fp32'`` runs ``network`` as it is. ``'bf16'`` runs a copy of it
        that computes in bfloat16 (weights stored in bfloat16) except in its
        first convolution, LRN layers and last dense layer, and predicts the
        galaxies that ``refinement`` picks again with ``network`` in fp32.
    backend : {'keras', 'tflearn'}
        The backend whose model file the weights came from (recorded only).
    refinement : Refinement, optional
        For bf16: which galaxies are predicted again in fp32 (default
        ``Refinement()``: near the boundaries of the most probable class and
        of the handbook sets). Ignored by fp32.

    Attributes
    ----------
    counts : dict
        ``predicted`` and ``refined``: the galaxies :meth:`forward` has
        predicted, and how many of them bf16 predicted again in fp32.
    """

    needs_calibration = False

    def __init__(self, network, precision="fp32", backend="keras", refinement=None):
        from gamornet.inference._engine import Engine

        precision = check_precision(precision)
        if precision == "int8":
            raise ValueError("KerasEngine runs fp32 and bf16; int8 is Int8Engine's. Received: precision='int8'")
        if refinement is not None and not isinstance(refinement, Refinement):
            raise TypeError(f"refinement must be a gamornet.inference.bf16.Refinement or None. Received an object of type "
                            f"{type(refinement).__name__}")  # fmt: skip
        self.precision = precision
        self.input_shape = check_network(network)
        self.network = network if precision == "fp32" else _bfloat16_copy(network)
        self._engine = Engine(self.network, backend)
        self.head_layers = self._engine.head_layers
        self.refinement = None
        self.counts = {"predicted": 0, "refined": 0}
        if precision == "bf16":
            self.refinement = Refinement() if refinement is None else refinement
            self._reference = Engine(network, backend)  # fp32, for the galaxies near a class boundary

    def forward(self, batch):
        """Probabilities of a batch of images (b, x, y, ndim): (b, 3) float32 [p_disk, p_indet, p_bulge]."""
        ((_, probabilities),) = self.forward_stream([(None, batch)])
        return probabilities

    def forward_stream(self, items, refine_batch=REFINE_BATCH, max_waiting=MAX_WAITING_IMAGES):
        """Probabilities of a stream of batches, in order; bf16 refines in batches of its own.

        A forward pass over a few images costs nearly as much as over a
        batch (the dense layers' weights are read whole either way), so bf16
        collects the images to predict again in fp32 from several batches and
        predicts them together. A batch is yielded once its own images are
        refined: its results may come a few batches late.

        Parameters
        ----------
        items : iterable of (key, batch)
            Any key (handed back) with a batch of images (b, x, y, ndim), an
            array or a TensorFlow tensor.
        refine_batch : int
            bf16 predicts the collected images in fp32 once this many are
            waiting.
        max_waiting : int
            ... or once the batches held back hold this many images.

        Yields
        ------
        (key, numpy.ndarray of float32, shape (b, 3))
        """
        held, queued, n_queued, n_held = [], [], 0, 0
        for key, batch in items:
            batch = check_batch(batch, self.input_shape)
            if batch.shape[0] == 0:
                probabilities = np.empty((0, 3), dtype=np.float32)
            else:
                probabilities = np.array(self._engine.forward(batch), dtype=np.float32)
            self.counts["predicted"] += len(probabilities)
            rows = np.empty(0, dtype=np.int64)
            if self.refinement is not None and len(probabilities):
                import tensorflow as tf

                rows = np.flatnonzero(self.refinement.mask(probabilities))
                if len(rows):
                    queued.append(tf.gather(batch, rows))
                    n_queued += len(rows)
            held.append((key, probabilities, rows))
            n_held += len(probabilities)
            if n_queued >= refine_batch or n_held >= max_waiting or not n_queued:
                yield from self._refined(held, queued, refine_batch)
                held, queued, n_queued, n_held = [], [], 0, 0
        yield from self._refined(held, queued, refine_batch)

    def _refined(self, held, queued, refine_batch):
        """The held batches, in order, with their queued images predicted again in fp32."""
        if queued:
            import tensorflow as tf

            images = tf.concat(queued, axis=0)
            starts = range(0, int(images.shape[0]), refine_batch)
            refined = np.concatenate([np.asarray(self._reference.forward(images[start : start + refine_batch]),
                                                 dtype=np.float32) for start in starts])  # fmt: skip
            self.counts["refined"] += len(refined)
            position = 0
            for _, probabilities, rows in held:
                probabilities[rows] = refined[position : position + len(rows)]
                position += len(rows)
        for key, probabilities, _ in held:
            yield key, probabilities

    def features(self, batch):
        """The flattened output (b, F) of the convolutional part."""
        return self._engine.features(check_batch(batch, self.input_shape))

    def head(self, features, training=False):
        """Probabilities (b, 3), float32, from :meth:`features`; dropout is on only when ``training`` is True."""
        return np.asarray(self._engine.head(features, training=training), dtype=np.float32)

    def calibrate(self, images):
        """Nothing to calibrate in fp32 or bf16 (present so that every engine can be driven the same way)."""

    def provenance(self):
        """What runs the network: a dict for the predictions' provenance."""
        import keras
        import tensorflow as tf

        described = {"precision": self.precision, "engine": "tensorflow", "tensorflow": tf.__version__,
                     "keras": keras.__version__}  # fmt: skip
        if self.precision == "bf16":
            described["fp32_layers"] = list(_BF16_FP32_ROLES)
            described["refined_in_fp32"] = dict(self.refinement.describe(), **self.counts)
        return described


def _bfloat16_copy(network):
    """A copy of ``network`` that computes in bfloat16, except the layers of _BF16_FP32_ROLES.

    The bfloat16 layers get the 'bfloat16' policy (weights stored in bfloat16,
    so they are not cast again at every call); Keras casts the activations
    between fp32 and bfloat16 layers. Pooling, flatten and dropout layers take
    the precision of the layer before them, so that no activation is rounded
    on its way between two fp32 layers.
    """
    import keras

    policies, policy = {}, "float32"
    for name, role in layer_roles(network).items():
        if role != "other":
            policy = "float32" if role in _BF16_FP32_ROLES else "bfloat16"
        policies[name] = policy

    def with_policy(layer):
        config = layer.get_config()
        config["dtype"] = policies[layer.name]
        return layer.__class__.from_config(config)

    copy = keras.models.clone_model(network, clone_function=with_policy)
    for source, target in zip(network.layers, copy.layers):
        if source.weights:
            target.set_weights(source.get_weights())
    return copy
