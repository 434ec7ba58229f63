"""Vectors as stored in Redis: little-endian float32 bytes."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Vector = npt.NDArray[np.float32]
_DTYPE = np.dtype("<f4")


def encode(vector: npt.ArrayLike) -> bytes:
    return np.asarray(vector, dtype=_DTYPE).tobytes()


def decode(raw: object) -> Vector | None:
    """A stored vector, or None where the key is missing (Redis answered nil)."""
    if not isinstance(raw, bytes | bytearray | memoryview):
        return None
    return np.frombuffer(raw, dtype=_DTYPE).astype(np.float32)
