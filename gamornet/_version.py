"""The version of gamornet, in one place: the package, its outputs' provenance and ``setup.py`` read it here."""

__version__ = "0.5.0.dev0"
