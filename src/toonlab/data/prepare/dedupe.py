"""Perceptual hashing for near-duplicate removal: a DCT pHash (Zauner 2010; the imagehash package's ``phash``
recipe) packed into a uint64, Hamming distances by popcount, vectorised over all kept hashes."""

from __future__ import annotations

import cv2
import numpy as np

HASH_BITS = 64


def phash(rgb: np.ndarray) -> int:
    """64-bit DCT perceptual hash of an HWC uint8 RGB (or HW gray) image.

    Gray → 32×32 (area) → 2-D DCT → the 8×8 lowest frequencies → bit = coefficient > their median
    (DC included, as imagehash). Bit i of the result is coefficient i in row-major order.
    """
    gray = rgb if rgb.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2GRAY)
    small = cv2.resize(gray.astype(np.float32), (32, 32), interpolation=cv2.INTER_AREA)
    low = cv2.dct(small)[:8, :8].ravel()
    bits = (low > np.median(low)).astype(np.uint64)
    return int((bits << np.arange(HASH_BITS, dtype=np.uint64)).sum())


def hamming(a: int | np.ndarray, b: int | np.ndarray) -> np.ndarray:
    """Number of differing bits between uint64 hashes (broadcasts)."""
    return np.bitwise_count(np.bitwise_xor(np.asarray(a, np.uint64), np.asarray(b, np.uint64)))


class HashIndex:
    """Hashes kept so far; ``near(h)`` asks whether any lies within ``threshold`` bits (inclusive) of ``h``.

    A linear popcount scan: ~1 µs per 1,000 hashes, ample for datasets of ~10⁵ images."""

    def __init__(self, threshold: int, hashes=()):
        self.threshold = int(threshold)
        self._buf = np.zeros(max(64, len(hashes) * 2), np.uint64)
        self._n = 0
        for h in hashes:
            self.add(h)

    def __len__(self) -> int:
        return self._n

    def near(self, h: int) -> bool:
        if self.threshold < 0 or self._n == 0:
            return False
        return bool((hamming(self._buf[: self._n], h) <= self.threshold).any())

    def add(self, h: int) -> None:
        if self._n == len(self._buf):
            self._buf = np.concatenate([self._buf, np.zeros_like(self._buf)])
        self._buf[self._n] = np.uint64(h)
        self._n += 1

    def add_if_new(self, h: int) -> bool:
        """Add ``h`` unless a near duplicate is kept already; True when added."""
        if self.near(h):
            return False
        self.add(h)
        return True


def hash_hex(h: int) -> str:
    return f"{h:016x}"


def hash_from_hex(s: str) -> int:
    return int(s, 16)
