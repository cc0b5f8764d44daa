"""Compact storage of a run's sample series: float32 columns, NaN for missing, zlib-compressed.

A 7-hour run at one sample per second packs to roughly 150 kB before compression; the columns compress well
because timer state and cadence change slowly.
"""

from __future__ import annotations

import math
import struct
import sys
import zlib
from array import array
from typing import TYPE_CHECKING, Any

from stridecare.domain.run import Samples

if TYPE_CHECKING:
    from stridecare.domain.load_arrays import SampleColumns

ENCODING = "f32z-v1"
_COLUMNS = ("t", "distance_m", "speed_mps", "cadence_spm", "altitude_m", "timer_running")
_HEADER = struct.Struct("<4sI")
# zlib's fastest level: a third of level 6's time for about 8 % more bytes (reading is the same either way).
_LEVEL = 1


def pack_samples(samples: Samples) -> bytes:
    """Serialise ``samples`` into the compact column format (the same bytes as
    :func:`pack_samples_reference`, each column converted in one NumPy pass)."""
    # deferred: start-up time (NumPy costs 80 ms; only processes that store runs pack)
    from stridecare.domain.load_arrays import SampleColumns

    return pack_columns(SampleColumns.of(samples))


def pack_columns(columns: SampleColumns) -> bytes:
    """:func:`pack_samples` of the samples ``columns`` holds (``SampleColumns.of``): for a caller that converted
    them already, to check them before they are stored."""
    import numpy as np  # deferred: start-up time (as in pack_samples)

    parts = [_HEADER.pack(b"SCS1", len(columns))]
    with np.errstate(over="ignore"):  # a value past float32's range is stored as infinity, as array("f") does
        for name in _COLUMNS:
            # NaN stands for None; the double is rounded to float32 as a C cast, like array("f").
            parts.append(getattr(columns, name).astype("<f4").tobytes())
    return zlib.compress(b"".join(parts), _LEVEL)


def pack_samples_reference(samples: Samples) -> bytes:
    """The reference for :func:`pack_samples`, one value at a time (kept for the differential test)."""
    n = len(samples)
    blob = bytearray(_HEADER.pack(b"SCS1", n))
    for name in _COLUMNS:
        values = getattr(samples, name)
        col = array("f")
        if name == "timer_running":
            col.extend(1.0 if v else 0.0 for v in values)
        elif name == "t":
            col.extend(values)
        else:
            col.extend(math.nan if v is None else v for v in values)
        if col.itemsize != 4:  # pragma: no cover - every supported platform has 4-byte floats
            raise RuntimeError("float32 arrays required")
        if _big_endian():
            col.byteswap()
        blob += col.tobytes()
    return zlib.compress(bytes(blob), _LEVEL)


def _opened(data: bytes) -> tuple[bytes, int]:
    """The decompressed blob and its sample count; ``ValueError`` when it is not one or is cut short."""
    raw = zlib.decompress(data)
    magic, n = _HEADER.unpack_from(raw, 0)
    if magic != b"SCS1":
        raise ValueError("not a stridecare sample blob")
    if len(raw) < _HEADER.size + 4 * n * len(_COLUMNS):
        raise ValueError("a stridecare sample blob cut short")
    return raw, int(n)


def unpack_samples(data: bytes) -> Samples:
    """Restore the series written by :func:`pack_samples` (each column converted in one NumPy pass)."""
    import numpy as np  # deferred: start-up time (as in pack_samples)

    raw, n = _opened(data)
    columns = {
        name: np.frombuffer(raw, dtype="<f4", count=n, offset=_HEADER.size + 4 * n * i)
        for i, name in enumerate(_COLUMNS)
    }

    def opt(values: Any) -> list[float | None]:
        # float32 to Python floats exactly as array("f").tolist(); NaN (not recorded) back to None
        out: list[float | None] = values.tolist()
        for i in np.flatnonzero(np.isnan(values)).tolist():
            out[i] = None
        return out

    return Samples(
        t=columns["t"].tolist(),
        distance_m=opt(columns["distance_m"]),
        speed_mps=opt(columns["speed_mps"]),
        cadence_spm=opt(columns["cadence_spm"]),
        altitude_m=opt(columns["altitude_m"]),
        timer_running=(columns["timer_running"] >= 0.5).tolist(),
    )


def unpack_columns(data: bytes) -> SampleColumns:
    """The series written by :func:`pack_samples` as columns: ``SampleColumns.of(unpack_samples(data))``, without
    the lists in between (for the load model, which reads arrays)."""
    import numpy as np  # deferred: start-up time (as in pack_samples)

    from stridecare.domain.load_arrays import SampleColumns  # deferred: start-up time (it imports NumPy)

    raw, n = _opened(data)
    # float32 to float64 is exact, as float32 to a Python float is; NaN stays NaN (None, then NaN, in the lists).
    floats = np.frombuffer(raw, dtype="<f4", count=n * len(_COLUMNS), offset=_HEADER.size).astype(np.float64)
    columns = {name: floats[i * n : (i + 1) * n] for i, name in enumerate(_COLUMNS)}
    return SampleColumns(
        t=columns["t"],
        distance_m=columns["distance_m"],
        speed_mps=columns["speed_mps"],
        cadence_spm=columns["cadence_spm"],
        altitude_m=columns["altitude_m"],
        timer_running=columns["timer_running"] >= 0.5,
    )


def unpack_samples_reference(data: bytes) -> Samples:
    """The reference for :func:`unpack_samples`, one value at a time (kept for the differential test)."""
    raw = zlib.decompress(data)
    magic, n = _HEADER.unpack_from(raw, 0)
    if magic != b"SCS1":
        raise ValueError("not a stridecare sample blob")
    offset = _HEADER.size
    columns: dict[str, list[float]] = {}
    for name in _COLUMNS:
        col = array("f")
        col.frombytes(raw[offset : offset + 4 * n])
        if _big_endian():
            col.byteswap()
        offset += 4 * n
        columns[name] = col.tolist()

    def opt(values: list[float]) -> list[float | None]:
        return [None if math.isnan(v) else v for v in values]

    return Samples(
        t=columns["t"],
        distance_m=opt(columns["distance_m"]),
        speed_mps=opt(columns["speed_mps"]),
        cadence_spm=opt(columns["cadence_spm"]),
        altitude_m=opt(columns["altitude_m"]),
        timer_running=[v >= 0.5 for v in columns["timer_running"]],
    )


def _big_endian() -> bool:
    return sys.byteorder == "big"
