"""Small helpers that the whole package shares: argument checks, atomic files, hashing, progress bars,
background prefetching and the one quiet import of TensorFlow and Keras.

Nothing here is part of the public API; each module's names are public to the rest of the package.
"""
