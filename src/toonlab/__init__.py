"""toonlab: photo <-> cartoon translation with GANs (train, run, evaluate, serve)."""

__version__ = "0.1.0"


def load(source="classic", **options):
    """A :class:`toonlab.infer.translator.Translator` for ``source`` ("classic", an export ``.safetensors``, a run
    dir or an ``.onnx`` file); ``options`` as ``Translator.load``. Imported lazily so ``import toonlab`` stays light."""
    from toonlab.infer.translator import Translator

    return Translator.load(source, **options)
