"""A disk cache for data that is expensive to generate (e.g. the fluid experiment's simulated examples).

`load_or_create(path, create)` returns the tensors stored at `path`, or calls `create()` and stores its result
there. Writes are atomic: the data goes to a temporary file in the same folder, which is flushed, synced to disk
and then renamed over `path` (`os.replace`), so a reader sees either no file or a complete one, never a partial
write, even when several processes fill the same cache. Files are read with `torch.load(weights_only=True)`,
which only reconstructs tensors and plain containers and never runs code from the file.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from typing import Callable, Optional

import torch

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
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', suffix='.tmp', dir=folder)
    try:
        with os.fdopen(handle, 'wb') as file:
            torch.save(data, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
    return data
