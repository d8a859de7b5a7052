"""An independent numpy forward pass of GaMorNet, written from the paper's Table 2.

This module imports neither TensorFlow, Keras nor gamornet: it is the
reference the backends are checked against. It implements TensorFlow's 'SAME'
padding rules and both local response normalisation flavours of SPEC §1.
"""

import numpy as np

# (kind, parameters) of the 17 layers of Table 2 after the input.
CONV_LAYERS = (  # filters, kernel size, stride
    (96, 11, 4),
    (256, 5, 1),
    (384, 3, 1),
    (384, 3, 1),
    (256, 3, 1),
)
DENSE_UNITS = (4096, 4096, 3)


def same_padding(size, kernel, stride):
    """TensorFlow 'SAME' padding: (output size, padding before, padding after)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return out, total // 2, total - total // 2


def _windows(x, kernel, stride, fill):
    """All kernel x kernel windows of x (h, w, c) under 'SAME' padding: (oh, ow, k, k, c)."""
    h, w, c = x.shape
    oh, top, bottom = same_padding(h, kernel, stride)
    ow, left, right = same_padding(w, kernel, stride)
    padded = np.pad(x, ((top, bottom), (left, right), (0, 0)), constant_values=fill)
    view = np.lib.stride_tricks.sliding_window_view(padded, (kernel, kernel), axis=(0, 1))
    # sliding_window_view puts the window axes last: (h', w', c, k, k)
    view = view[::stride, ::stride][:oh, :ow]
    return view.transpose(0, 1, 3, 4, 2)


def conv2d_same(x, kernel, bias, stride):
    """Convolution (cross-correlation, as TensorFlow does) with 'SAME' padding, plus bias."""
    k = kernel.shape[0]
    windows = _windows(x, k, stride, 0.0)
    oh, ow = windows.shape[:2]
    columns = windows.reshape(oh * ow, -1)
    return (columns @ kernel.reshape(-1, kernel.shape[-1]) + bias).reshape(oh, ow, -1)


def max_pool_same(x, size=3, stride=2):
    return _windows(x, size, stride, -np.inf).max(axis=(2, 3))


def lrn_keras(x, n=5, alpha=1e-4, beta=0.75, k=1.0):
    """Keras flavour: mean of x^2 over an n x n window of in-image pixels, summed over channels."""
    squared = x**2
    ones = np.ones(x.shape[:2] + (1,))
    window_sum = _windows(squared, n, 1, 0.0).sum(axis=(2, 3))
    window_count = _windows(ones, n, 1, 0.0).sum(axis=(2, 3))
    local_mean = window_sum / window_count
    summed = local_mean.sum(axis=-1, keepdims=True)
    return x / (k + alpha * summed) ** beta


def lrn_tflearn(x, depth_radius=5, bias=1.0, alpha=1e-4, beta=0.75):
    """TFLearn flavour, tf.nn.local_response_normalization: sum of x^2 over 11 neighbouring channels."""
    squared = x**2
    channels = x.shape[-1]
    padded = np.pad(squared, ((0, 0), (0, 0), (depth_radius, depth_radius)))
    summed = np.zeros_like(x)
    for offset in range(2 * depth_radius + 1):
        summed += padded[:, :, offset : offset + channels]
    return x / (bias + alpha * summed) ** beta


def relu(x):
    return np.maximum(x, 0.0)


def softmax(x):
    shifted = x - x.max(axis=-1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=-1, keepdims=True)


def forward_features(image, weights, lrn):
    """Layers 1-12 of one image (h, w, c): returns the activations entering dense layer 13."""
    x = np.asarray(image, dtype=np.float64)
    (k1, b1), (k2, b2), (k3, b3), (k4, b4), (k5, b5) = weights[:5]
    x = lrn(max_pool_same(relu(conv2d_same(x, k1, b1, 4))))
    x = lrn(max_pool_same(relu(conv2d_same(x, k2, b2, 1))))
    x = relu(conv2d_same(x, k3, b3, 1))
    x = relu(conv2d_same(x, k4, b4, 1))
    x = lrn(max_pool_same(relu(conv2d_same(x, k5, b5, 1))))
    return x.reshape(-1)  # (row, column, channel) order


def forward(images, weights, lrn=lrn_keras):
    """Class probabilities of a batch of images (n, h, w, c) under ``weights``.

    ``weights`` is a list of 8 (kernel, bias) pairs in Keras layout: conv
    kernels (k, k, c_in, c_out), dense kernels (n_in, n_out). Dropout is the
    identity at inference.
    """
    (d1, c1), (d2, c2), (d3, c3) = weights[5:]
    d1, d2, d3 = (np.asarray(d, dtype=np.float64) for d in (d1, d2, d3))
    out = []
    for image in images:
        x = forward_features(image, weights, lrn)
        x = np.tanh(x @ d1 + c1)
        x = np.tanh(x @ d2 + c2)
        out.append(softmax(x @ d3 + c3))
    return np.array(out)


def dropout_keep_masks(rng, n_samples, n_images, units=DENSE_UNITS[0], rate=0.5):
    """Keep masks of dropout (True: the unit is kept, with probability 1 - rate), (n_samples, n_images, units)."""
    return rng.random((n_samples, n_images, units)) >= rate


def forward_mc(images, weights, keep_1, keep_2, lrn=lrn_keras, rate=0.5):
    """Class probabilities under Monte-Carlo dropout: (n_samples, n, 3).

    Dropout layers 14 and 16 of Table 2 are applied as at training time
    (inverted dropout): the outputs of dense layers 13 and 15 are multiplied
    by the keep masks ``keep_1`` and ``keep_2`` (n_samples, n, 4096) and
    divided by 1 - rate.
    """
    (d1, c1), (d2, c2), (d3, c3) = ((np.asarray(k, np.float64), np.asarray(b, np.float64)) for k, b in weights[5:])
    features = np.array([forward_features(image, weights, lrn) for image in images])
    hidden = np.tanh(features @ d1 + c1)  # (n, 4096): no dropout before it, so computed once
    n_samples, n_images, units = keep_1.shape
    # One (n_samples * n, 4096) product rather than n_samples small ones, each reading all of d2.
    dropped = (hidden[None] * keep_1 / (1.0 - rate)).reshape(n_samples * n_images, units)
    hidden = np.tanh(dropped @ d2 + c2).reshape(n_samples, n_images, -1)
    return softmax((hidden * keep_2 / (1.0 - rate)) @ d3 + c3)


# Convolutional layers (0-based) followed by a 3x3, stride-2 max-pool and LRN.
POOLED_AFTER = (0, 1, 4)


def weight_shapes(input_shape):
    """Shapes of the 8 (kernel, bias) pairs for an input (x, y, ndim)."""
    h, w, c = input_shape
    shapes = []
    for index, (filters, size, stride) in enumerate(CONV_LAYERS):
        shapes.append(((size, size, c, filters), (filters,)))
        c = filters
        h, w = same_padding(h, size, stride)[0], same_padding(w, size, stride)[0]
        if index in POOLED_AFTER:
            h, w = same_padding(h, 3, 2)[0], same_padding(w, 3, 2)[0]
    units_in = h * w * c
    for units in DENSE_UNITS:
        shapes.append(((units_in, units), (units,)))
        units_in = units
    return shapes


def calibrated_weights(input_shape, images, lrn, seed=0, conv_rms=30.0):
    """Known weights, scaled layer by layer so that every layer stays informative.

    Each layer's weights are drawn from a seeded normal distribution, then
    scaled (with this reference's own forward pass on ``images``) so that the
    convolutions give activations of rms ``conv_rms`` (large enough that LRN
    matters) and the dense layers give pre-activations of unit rms (so that
    neither tanh nor softmax saturates).
    """
    rng = np.random.default_rng(seed)
    shapes = weight_shapes(input_shape)
    weights = []
    activations = [np.asarray(image, dtype=np.float64) for image in images]
    strides = [stride for _, _, stride in CONV_LAYERS]
    for index, (kernel_shape, bias_shape) in enumerate(shapes[:5]):
        kernel = rng.standard_normal(kernel_shape)
        bias = 0.1 * rng.standard_normal(bias_shape)
        pre = [conv2d_same(a, kernel, 0.0 * bias, strides[index]) for a in activations]
        scale = conv_rms / np.sqrt(np.mean(np.square(pre)))
        kernel *= scale
        bias *= conv_rms
        weights.append((kernel.astype(np.float32), bias.astype(np.float32)))
        new = []
        for a in activations:
            x = relu(conv2d_same(a, kernel, bias, strides[index]))
            if index in POOLED_AFTER:
                x = lrn(max_pool_same(x))
            new.append(x)
        activations = new
    features = np.array([a.reshape(-1) for a in activations])
    for index, (kernel_shape, bias_shape) in enumerate(shapes[5:]):
        kernel = rng.standard_normal(kernel_shape)
        bias = 0.1 * rng.standard_normal(bias_shape)
        pre = features @ kernel
        kernel *= 1.0 / np.sqrt(np.mean(np.square(pre)))
        weights.append((kernel.astype(np.float32), bias.astype(np.float32)))
        features = features @ kernel + bias
        if index < 2:
            features = np.tanh(features)
    return weights


def galaxy_images(n, input_shape, seed=0, peak=800.0, sky=100.0):
    """Galaxy-like images: a Sersic-ish blob on sky with Gaussian noise, pixel values in the hundreds."""
    rng = np.random.default_rng(seed)
    h, w, c = input_shape
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    images = np.empty((n, h, w, c), dtype=np.float32)
    for i in range(n):
        cx, cy = w / 2 + rng.uniform(-2, 2), h / 2 + rng.uniform(-2, 2)
        q, angle = rng.uniform(0.3, 1.0), rng.uniform(0, np.pi)
        dx, dy = x - cx, y - cy
        major = dx * np.cos(angle) + dy * np.sin(angle)
        minor = -dx * np.sin(angle) + dy * np.cos(angle)
        radius = np.sqrt(major**2 + (minor / q) ** 2)
        scale = rng.uniform(0.04, 0.12) * min(h, w)
        index = rng.uniform(1.0, 4.0)
        profile = np.exp(-((radius / scale) ** (1.0 / index)) * 2.0)
        image = sky + peak * rng.uniform(0.5, 1.5) * profile
        image = image + rng.normal(0.0, np.sqrt(sky), size=(h, w))
        images[i] = image[..., None].repeat(c, axis=-1)
    return images
