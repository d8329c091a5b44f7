"""A disk cache for data that is expensive to generate (e.g. the fluid experiment's simulated examples).

`load_or_create(path, create)` returns the tensors stored at `path`, or calls `create()` and stores its result
there. Writes go through `phi_hig.files.atomic_write` (a temporary file in the same folder, flushed and fsynced,
renamed over `path`, then the folder fsynced), so a reader sees either no file or a complete one, never a partial
write, even when several processes fill the same cache. Files are read with `torch.load(weights_only=True)`,
which only reconstructs tensors and plain containers and never runs code from the file.
"""
from __future__ import annotations

import hashlib
import json
import os
from typing import Callable, Optional

import torch

from .files import atomic_write

__all__ = ['load_or_create', 'key']


def key(*parts) -> str:
    """A short stable hash of JSON-serializable `parts`, for cache file names (12 hex digits of SHA-1)."""
    return hashlib.sha1(json.dumps(list(parts)).encode()).hexdigest()[:12]


def load_or_create(path: Optional[str], create: Callable[[], object]):
    """The data stored at `path` if the file exists, else `create()`, stored at `path` atomically.

    Args:
        path: Cache file (its folder is created when needed), or None to never cache.
        create: Builds the data: tensors, or tuples / lists / dicts of tensors and plain Python values.

    Returns:
        The loaded or created data (what `create` returned, or its stored copy).
    """
    if path is None:
        return create()
    if os.path.exists(path):
        return torch.load(path, weights_only=True)
    data = create()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    atomic_write(path, lambda file: torch.save(data, file))
    return data
