"""The sha256 of files, read in blocks: model files, caches, calibration and provenance records share it."""

import hashlib

_BLOCK = 1 << 20


def file_sha256(path):
    """The sha256 of a file's bytes, as 64 hexadecimal digits (OSError if it cannot be read)."""
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()
