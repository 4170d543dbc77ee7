"""The byte format of a waveform, shared by the API, the archive, the pipeline and the UI.

Little-endian float32: 4 bytes a sample instead of ~20 in JSON. A leaf beside `config` and
`errors`, so the UI can read an archived window without importing the archive.
"""

from __future__ import annotations

import base64
from typing import Any

import numpy as np

_FLOAT32_LE = "<f4"


def encode_samples(samples: Any) -> bytes:
    """A waveform as little-endian float32 bytes."""
    return np.asarray(samples, dtype=_FLOAT32_LE).tobytes()


def decode_samples(blob: bytes | str) -> np.ndarray:
    """Inverse of `encode_samples`; also accepts base64 text (spool lines and API answers are
    JSON)."""
    raw = base64.b64decode(blob) if isinstance(blob, str) else bytes(blob)
    return np.frombuffer(raw, dtype=_FLOAT32_LE).astype(np.float64)
