"""The Model contract and the registry of systems.

A system is one file in ``toonlab/models/`` holding a ``Model`` subclass decorated with ``@register("name")``.
The model says *what* to compute; the trainer (``toonlab.train``) says *how* to optimise:

- ``Config``: a dataclass of the paper's hyper-parameters (loss weights, architecture options, phase recipe).
- ``networks``: ``nn.ModuleDict`` of every trainable network (``G``, ``D_img``, …). Frozen helpers (the perceptual
  backbone) are kept outside it.
- ``phases()``: the training recipe, e.g. ``init`` (content-only pre-training of G) then ``adv`` (alternating
  ``D`` and ``G`` steps). Each ``Step`` names the networks its optimiser updates and its learning rate.
- ``training_step(step, batch)``: losses for one step (``step`` is a ``Step.name``); the trainer back-propagates
  ``losses["loss"]``; the other entries are logged. It never touches an optimiser.
- ``translator()``: the inference module: ``(B,3,H,W)`` in [-1, 1] (+ ``style`` for multi-style models) →
  ``(B,3,H,W)`` in [-1, 1]. Its ``state_dict`` is what an export checkpoint stores.
- ``after_optimizer_step(step)``: hook run after each optimiser step (AdaLIN ρ clipping lives here).

Batches are dicts of tensors in [-1, 1] unless noted: ``photo`` (B,3,H,W); ``cartoon`` (B,3,H,W); ``smooth``
(edge-smoothed cartoon, B,3,H,W); ``guided`` (guided-filtered cartoon); ``gray`` (grayscale cartoon, B,3,H,W);
``style`` (B,) int64 style ids; ``saliency`` (B,1,H,W) in [0, 1]. A model lists the keys it needs in
``requires``; the data pipeline loads prepared versions or computes them on the fly.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping

import torch
from torch import nn

from toonlab.config import from_dict, ranged, to_dict
from toonlab.errors import UsageError


@dataclass(frozen=True)
class Step:
    """One optimiser update inside a phase: ``training_step(name, batch)`` then a step of ``networks``' params."""

    name: str
    networks: tuple[str, ...]
    lr: float
    betas: tuple[float, float] = (0.5, 0.999)


@dataclass(frozen=True)
class Phase:
    """A stretch of training (``epochs`` passes over the photo set) cycling through ``steps`` each iteration."""

    name: str
    epochs: int
    steps: tuple[Step, ...]


class Model(nn.Module):
    """Base class of every registered system. Subclasses set ``name`` (via @register), ``Config``, ``requires``,
    ``size_multiple`` and build ``self.networks`` in ``__init__(cfg)``."""

    name: ClassVar[str] = ""
    Config: ClassVar[type] = type(None)
    requires: ClassVar[tuple[str, ...]] = ("photo", "cartoon")
    default_size: ClassVar[int] = 256
    size_multiple: ClassVar[int] = 4  # H and W given to translator() must be multiples of this
    direction: ClassVar[str] = "photo2cartoon"  # or "cartoon2photo" (toon2real)

    def __init__(self, cfg: Any):
        super().__init__()
        self.cfg = cfg
        self.networks = nn.ModuleDict()

    # --- to override -------------------------------------------------------------------------------------
    def phases(self) -> tuple[Phase, ...]:
        raise NotImplementedError

    def training_step(self, step: str, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def translator(self) -> nn.Module:
        raise NotImplementedError

    @property
    def styles(self) -> tuple[str, ...]:
        """Style names of a multi-style model (empty for single-style systems)."""
        return ()

    def after_optimizer_step(self, step: str) -> None:
        """Called by the trainer after each optimiser step; clips AdaLIN/ILN ρ to [0, 1] by default. Under
        ``train.sync_free`` it also runs after a step skipped on the device (non-finite loss), so it must leave
        weights the step did not change unchanged (the ρ clip is idempotent)."""
        for module in self.networks.modules():
            clip = getattr(module, "clip_rho_", None)
            if callable(clip):
                clip()

    # --- helpers -----------------------------------------------------------------------------------------
    def config_dict(self) -> dict:
        return to_dict(self.cfg)


class TwoWayModel(Model):
    """A system with generators in both directions (CycleGAN family, UNIT, SingleGAN): its Config's ``translate``
    (``"cartoon2photo"`` | ``"photo2cartoon"``) picks the direction ``translator()`` exports, and so the instance's
    ``direction``; it travels with the export's config."""

    DIRECTIONS: ClassVar[tuple[str, str]] = ("cartoon2photo", "photo2cartoon")

    def __init__(self, cfg: Any):
        super().__init__(cfg)
        if cfg.translate not in self.DIRECTIONS:
            raise ValueError(f"{self.name}: translate must be cartoon2photo or photo2cartoon, got {cfg.translate!r}")

    @property
    def direction(self) -> str:  # type: ignore[override]  # per instance: follows cfg.translate
        return self.cfg.translate


def init_then_adversarial(cfg: Any, d_nets: tuple[str, ...] = ("D",)) -> tuple[Phase, ...]:
    """The CartoonGAN-family recipe: ``init`` (content-only pre-training of G at ``cfg.lr_init``) for
    ``cfg.init_epochs``, then ``adv`` alternating a ``D`` step over ``d_nets`` (``cfg.lr_d``) and a ``G`` step
    (``cfg.lr_g``) for ``cfg.adv_epochs``; Adam betas ``cfg.betas``."""
    return (
        Phase("init", cfg.init_epochs, (Step("init", ("G",), cfg.lr_init, cfg.betas),)),
        Phase("adv", cfg.adv_epochs, (Step("D", d_nets, cfg.lr_d, cfg.betas), Step("G", ("G",), cfg.lr_g, cfg.betas))),
    )


def perceptual_net(cfg: Any, device: torch.device | str) -> nn.Module:
    """The frozen backbone ``cfg.perceptual`` names (``toonlab.nn.perceptual``) at the feature scale
    ``cfg.perceptual_scale``, shared, built on first use, outside ``networks``: ``(B,3,H,W)`` in [-1, 1] →
    ``(B,C,H/8,W/8)``. Content, Gram and mean-std losses use it."""
    from toonlab.nn.perceptual import shared_perceptual

    return shared_perceptual(cfg.perceptual, device, cfg.perceptual_scale)


def perceptual_content_loss(cfg: Any, fake: torch.Tensor, photo: torch.Tensor) -> torch.Tensor:
    """Content loss L_con = E‖F(G(p)) − F(p)‖₁ on the perceptual features F (the papers': VGG19 conv4_4 pre-ReLU);
    ``fake``, ``photo`` (B,3,H,W) in [-1, 1]; the target features carry no graph."""
    from toonlab import losses

    net = perceptual_net(cfg, photo.device)
    with torch.no_grad():
        target = net(photo)
    return losses.content_loss(net(fake), target)


def _with_perceptual_scale(config: type) -> type:
    """``config`` (a model Config with a ``perceptual`` field) extended by ``perceptual_scale``: the mean |feature|
    the EfficientNet / random backbones are scaled to (``toonlab.nn.perceptual``; VGG19 files keep their native
    scale). Declared here, once, for every system whose losses run on the backbone; default ``FEATURE_TARGET``
    (5.0), a calibration chosen by a sweep (docs/perceptual.md). Configs written without it load with the default."""
    from toonlab.nn.perceptual import FEATURE_TARGET

    extended = dataclasses.make_dataclass(
        config.__name__, [("perceptual_scale", float, ranged(FEATURE_TARGET, gt=0))], bases=(config,),
        frozen=config.__dataclass_params__.frozen)
    for attr in ("__module__", "__qualname__", "__doc__"):
        setattr(extended, attr, getattr(config, attr))
    return extended


def _legacy_perceptual(fields: Mapping) -> dict:
    """Configs written before ``perceptual`` existed (``vgg_weights`` / ``vgg_variant``) → the equivalent backbone
    name, so old exports still load."""
    fields = dict(fields)
    weights, variant = fields.pop("vgg_weights", None), fields.pop("vgg_variant", None)
    if (weights is not None or variant is not None) and "perceptual" not in fields:
        fields["perceptual"] = ("random" if weights == "random"
                                else "vgg19_caffe" if variant == "caffe" else "vgg19")
    return fields


_REGISTRY: dict[str, type[Model]] = {}


def register(name: str):
    """Class decorator: ``@register("ctss") class CTSS(Model): ...`` makes the system buildable by name."""

    def wrap(cls: type[Model]) -> type[Model]:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"model name {name!r} registered twice")
        if not dataclasses.is_dataclass(cls.Config):
            raise TypeError(f"{cls.__name__}.Config must be a dataclass")
        names = {f.name for f in dataclasses.fields(cls.Config)}
        if "perceptual" in names and "perceptual_scale" not in names:
            cls.Config = _with_perceptual_scale(cls.Config)
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def model_names() -> list[str]:
    _import_all()
    return sorted(_REGISTRY)


def get_model_class(name: str) -> type[Model]:
    # most names are their module's: import that one alone (~50 ms less on each CLI call than importing all)
    if name not in _REGISTRY and name.isidentifier():
        import importlib

        try:
            importlib.import_module(f"toonlab.models.{name}")
        except ImportError:
            pass
    if name not in _REGISTRY:
        _import_all()
    if name not in _REGISTRY:
        raise UsageError(f"unknown model {name!r} (known: {', '.join(sorted(_REGISTRY)) or 'none'})")
    return _REGISTRY[name]


def build_model(name: str, cfg: Mapping | Any | None = None) -> Model:
    """Build registered model ``name`` from a config mapping (strictly checked) or a ready Config instance."""
    cls = get_model_class(name)
    if cfg is None:
        cfg = cls.Config()
    elif isinstance(cfg, Mapping):
        cfg = from_dict(cls.Config, _legacy_perceptual(cfg), name)
    return cls(cfg)


def _import_all() -> None:
    """Import every module of toonlab.models so that their @register decorators run (no list to maintain)."""
    import importlib
    import pkgutil

    import toonlab.models as pkg

    for info in pkgutil.iter_modules(pkg.__path__):
        if not info.name.startswith("_") and info.name != "base":
            importlib.import_module(f"toonlab.models.{info.name}")
