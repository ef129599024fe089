"""toonlab: photo <-> cartoon translation with GANs (train, run, evaluate, serve)."""

__version__ = "0.1.0"


def load(source="classic", *, dtype="auto", **options):
    """A :class:`toonlab.infer.translator.Translator` for ``source`` ("classic", an export ``.safetensors``, a run
    dir or an ``.onnx`` file); ``options`` as ``Translator.load``. ``dtype`` defaults to "auto", as on the command
    line (bf16 where measured faster and faithful to float32 on this model, else float32; ``dtype="fp32"`` is
    exact), where ``Translator.load`` keeps float32. Imported lazily so ``import toonlab`` stays light."""
    from toonlab.infer.translator import Translator

    return Translator.load(source, dtype=dtype, **options)
