"""Training GaMorNet: the data (arrays, catalogues of files, tf.data), the training loop and the
simulated galaxies it learns from.

The 0.4.x training functions (``gamornet_train_keras``, ``gamornet_tl_keras``) live in
:mod:`gamornet.keras_module`.
"""
