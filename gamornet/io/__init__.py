"""Reading and writing files: galaxy images (FITS, cubes, ``.npy`` stacks) and prediction tables.

Imports no TensorFlow.
"""
