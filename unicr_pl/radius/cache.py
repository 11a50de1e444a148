"""A small in-memory LRU bounded by entry count and by bytes, for engines and curves.

`functools.lru_cache` bounds the count only, and one exact engine holds ~14 MB of tables, so a
C-OPT or I-OPT loop over new noises would grow without bound. Keys are `Noise.identity()`
digests (never `id(noise)`, which Python reuses once an object is freed).
"""

from __future__ import annotations

import os
import sys
from collections import OrderedDict
from collections.abc import Callable, Hashable
from typing import Any

import numpy as np
import torch


def nbytes(obj: Any, _depth: int = 0) -> int:
    """Bytes held by the arrays and tensors of `obj` (its attributes, dicts, lists, tuples),
    a few levels deep; other objects count their `sys.getsizeof`."""
    if isinstance(obj, np.ndarray):
        return obj.nbytes
    if isinstance(obj, torch.Tensor):
        return obj.element_size() * obj.nelement()
    if _depth > 3:
        return 0
    if isinstance(obj, dict):
        return sum(nbytes(v, _depth + 1) for v in obj.values())
    if isinstance(obj, (list, tuple)):
        return sum(nbytes(v, _depth + 1) for v in obj)
    if hasattr(obj, "__dict__") and not isinstance(obj, type):
        return sum(nbytes(v, _depth + 1) for v in vars(obj).values())
    return sys.getsizeof(obj)


class BoundedLRU:
    """Least-recently-used mapping holding at most `max_items` entries and `max_bytes` bytes
    (as measured by `nbytes`); the newest entry is always kept, even if larger on its own.

    Args:
        max_items: entry limit (>= 1).
        max_bytes: byte limit (>= 0).
    """

    def __init__(self, max_items: int, max_bytes: int) -> None:
        self._data: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self.resize(max_items, max_bytes)

    def resize(self, max_items: int, max_bytes: int) -> None:
        """Changes the limits, evicting the oldest entries that no longer fit."""
        if int(max_items) != max_items or max_items < 1:
            raise ValueError(f"max_items must be an integer >= 1, got {max_items}")
        if max_bytes < 0:
            raise ValueError(f"max_bytes must be >= 0, got {max_bytes}")
        self.max_items, self.max_bytes = int(max_items), int(max_bytes)
        self._evict()

    @property
    def total_bytes(self) -> int:
        """Bytes held by the cached entries now."""
        return sum(size for _, size in self._data.values())

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: Hashable) -> bool:
        return key in self._data

    def get(self, key: Hashable, default: Any = None) -> Any:
        """The cached value (now the most recently used), or `default`."""
        if key not in self._data:
            return default
        self._data.move_to_end(key)
        return self._data[key][0]

    def put(self, key: Hashable, value: Any) -> Any:
        """Stores `value` under `key` and returns it."""
        self._data[key] = (value, nbytes(value))
        self._data.move_to_end(key)
        self._evict()
        return value

    def get_or_create(self, key: Hashable, make: Callable[[], Any]) -> Any:
        """The cached value for `key`, made by `make()` and stored if absent."""
        found = self.get(key, _MISSING)
        return self.put(key, make()) if found is _MISSING else found

    def clear(self) -> None:
        """Drops every entry."""
        self._data.clear()

    def _evict(self) -> None:
        while len(self._data) > 1 and (
            len(self._data) > self.max_items or self.total_bytes > self.max_bytes
        ):
            self._data.popitem(last=False)


_MISSING = object()


def env_limits(prefix: str, items: int, megabytes: int) -> tuple[int, int]:
    """(max_items, max_bytes) from $<prefix>_ITEMS and $<prefix>_MB, else the defaults."""
    try:
        n = int(os.environ.get(f"{prefix}_ITEMS", items))
        mb = float(os.environ.get(f"{prefix}_MB", megabytes))
    except ValueError as err:
        raise ValueError(f"{prefix}_ITEMS / {prefix}_MB must be numbers: {err}") from err
    return n, int(mb * 2**20)
