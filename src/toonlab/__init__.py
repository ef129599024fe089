"""toonlab: photo <-> cartoon translation with GANs (train, run, evaluate, serve)."""

__version__ = "0.1.0"
