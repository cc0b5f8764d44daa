"""Packing a run's samples over NumPy gives the very bytes of the value-at-a-time reference, and unpacking the very
values."""

from __future__ import annotations

import math
import random

from stridecare.db.samples import pack_samples, pack_samples_reference, unpack_samples, unpack_samples_reference
from stridecare.domain.run import Samples


def _samples(rng: random.Random, n: int) -> Samples:
    def maybe(value: float) -> float | None:
        return None if rng.random() < 0.1 else value

    t = sorted(rng.uniform(0, 20_000) for _ in range(n))
    return Samples(
        t=t,
        distance_m=[maybe(rng.uniform(0, 50_000)) for _ in range(n)],
        speed_mps=[maybe(rng.choice([rng.uniform(0, 8), 0.0, 1e300, -1e300, math.inf])) for _ in range(n)],
        cadence_spm=[maybe(float(rng.randint(0, 250))) for _ in range(n)],
        altitude_m=[maybe(rng.uniform(-400, 8_000) + 1e-9) for _ in range(n)],
        timer_running=[rng.random() < 0.9 for _ in range(n)],
    )


def test_packed_bytes_equal_the_reference() -> None:
    rng = random.Random(7)
    for n in (0, 1, 2, 17, 3_600):
        samples = _samples(rng, n)
        assert pack_samples(samples) == pack_samples_reference(samples)


def test_packed_samples_read_back() -> None:
    samples = _samples(random.Random(3), 500)
    back = unpack_samples(pack_samples(samples))
    assert back.timer_running == samples.timer_running
    assert [v is None for v in back.distance_m] == [v is None for v in samples.distance_m]
    assert back.cadence_spm == samples.cadence_spm  # whole numbers survive float32 exactly


def test_unpacked_values_equal_the_reference() -> None:
    rng = random.Random(11)
    for n in (0, 1, 2, 17, 3_600):
        packed = pack_samples(_samples(rng, n))
        back, reference = unpack_samples(packed), unpack_samples_reference(packed)
        for name in ("t", "distance_m", "speed_mps", "cadence_spm", "altitude_m", "timer_running"):
            got, want = getattr(back, name), getattr(reference, name)
            # NaN never compares equal: compared by their text, which also tells None, inf and the types apart
            assert [repr(v) for v in got] == [repr(v) for v in want], name
            assert [type(v) for v in got] == [type(v) for v in want], name
