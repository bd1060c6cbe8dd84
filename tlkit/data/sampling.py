"""Which items a split gets: stratified train/val splits and the data.max_images cap, deterministic from the seed.

NumPy only; shared by the in-memory and folder sources (tlkit.data.sources) and the tfds source (tlkit.data.tfds).
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> Tuple[np.ndarray, np.ndarray]:
    """Indices (train, val): `fraction` of each class goes to val, at least one image each side
    for classes of 2 or more. Deterministic given the seed and the (sorted) input order; each
    class uses its own random stream, so adding a class does not move the others' files."""
    train, val = [], []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        members = members[np.random.default_rng([seed, int(label)]).permutation(len(members))]
        num_val = int(round(fraction * len(members)))
        if len(members) >= 2:
            num_val = min(max(num_val, 1), len(members) - 1)
        val.extend(members[:num_val])
        train.extend(members[num_val:])
    return np.sort(np.array(train, dtype=np.int64)), np.sort(np.array(val, dtype=np.int64))


def cap_per_class(labels: np.ndarray, max_images: Optional[int], seed: int) -> np.ndarray:
    """Indices of at most `max_images` items, shared between classes in proportion to their
    size (largest remainder, at least one per class), chosen deterministically from the seed."""
    if max_images is None or max_images >= len(labels):
        return np.arange(len(labels))
    classes, sizes = np.unique(labels, return_counts=True)
    quotas = sizes * max_images / len(labels)
    keep = np.maximum(np.floor(quotas).astype(int), 1)
    leftovers = np.argsort(-(quotas - np.floor(quotas)), kind="stable")
    for index in leftovers:
        if keep.sum() >= max_images:
            break
        if keep[index] < sizes[index]:
            keep[index] += 1
    chosen = []
    for label, quota in zip(classes, keep):
        members = np.flatnonzero(labels == label)
        members = members[np.random.default_rng([seed, int(label), 1]).permutation(len(members))]
        chosen.extend(members[:quota])
    return np.sort(np.array(chosen, dtype=np.int64))
