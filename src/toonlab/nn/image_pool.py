"""CycleGAN's image history buffer (Shrivastava et al. 2017; junyanz ``util/image_pool.py``): discriminators are
updated on a mix of the newest generated images and up to ``size`` older ones, which damps oscillation.

``query(images)``: for each image of the batch, while the pool holds fewer than ``size`` images it is stored and
returned as is; once full, with probability 1/2 a uniformly chosen stored image is returned in its place (and the
new one takes its slot), otherwise the new image is returned. ``size = 0`` disables the pool.
Random draws come from ``generator`` (a ``torch.Generator``) or torch's global RNG, so a seeded run is repeatable
and the trainer's saved RNG state covers it.
"""

from __future__ import annotations

import torch


class ImagePool:
    """History buffer of at most ``size`` detached images (C,H,W) (stored on the device they arrive on)."""

    def __init__(self, size: int = 50, generator: torch.Generator | None = None):
        if size < 0:
            raise ValueError(f"ImagePool size must be >= 0, got {size}")
        self.size = size
        self.generator = generator
        self.images: list[torch.Tensor] = []

    def __len__(self) -> int:
        return len(self.images)

    def _rand(self) -> float:
        return float(torch.rand((), generator=self.generator))

    def _randint(self, high: int) -> int:
        return int(torch.randint(high, (), generator=self.generator))

    @torch.no_grad()
    def query(self, images: torch.Tensor) -> torch.Tensor:
        """images (B,C,H,W) → (B,C,H,W) detached: a mix of these and stored images (see module doc)."""
        if images.ndim != 4:
            raise ValueError(f"ImagePool.query expects (B,C,H,W), got {tuple(images.shape)}")
        images = images.detach()
        if self.size == 0:
            return images
        out = []
        for image in images:
            if len(self.images) < self.size:
                self.images.append(image.clone())
                out.append(image)
            elif self._rand() > 0.5:
                slot = self._randint(self.size)
                out.append(self.images[slot].clone())
                self.images[slot] = image.clone()
            else:
                out.append(image)
        return torch.stack(out)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """Stored images as one (N,C,H,W) tensor (empty (0,) when the pool is empty) — for exact resume."""
        return {"images": torch.stack(self.images) if self.images else torch.zeros(0)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        images = state["images"]
        if images.numel() and images.shape[0] > self.size:
            raise ValueError(f"ImagePool state holds {images.shape[0]} images, more than size {self.size}")
        self.images = [im.clone() for im in images] if images.numel() else []
