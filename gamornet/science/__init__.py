"""The science without a network: probabilities to classes, calibration, thresholds, metrics,
preprocessing and the statistics of Monte-Carlo samples.

Imports no TensorFlow.
"""
