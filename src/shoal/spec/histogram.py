"""Counts of values by bucket, kept as plain numbers: what Prometheus histograms are
made of at a scrape, cheap to add to on a hot path (one bisect and two additions)."""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from typing import Final

#: Bucket bounds, in seconds: a no-op's run is under a millisecond, a cold start tens
#: of them, a long input minutes.
BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
BUCKETS_LONG: Final = (*BUCKETS, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)
#: Bucket bounds of batch sizes (inputs per batch of a ``@batched`` function).
BATCH_SIZES: Final = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0)


class Histogram:
    """Counts per bucket (not cumulative) and the sum."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: tuple[float, ...] = BUCKETS_LONG) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.total = 0.0

    def add(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.total += value

    def add_many(self, values: Iterable[float]) -> None:
        counts, bounds, where = self.counts, self.bounds, bisect.bisect_left
        total = 0.0
        for value in values:
            counts[where(bounds, value)] += 1
            total += value
        self.total += total

    def buckets(self) -> list[tuple[str, float]]:
        """Prometheus' cumulative ``(le, count)`` pairs, ``+Inf`` last."""
        out, running = [], 0
        for bound, count in zip((*map(str, self.bounds), "+Inf"), self.counts, strict=True):
            running += count
            out.append((bound, float(running)))
        return out


def combined(histograms: list[Histogram]) -> Histogram:
    """One histogram adding up ``histograms`` (of the same bounds)."""
    if len(histograms) == 1:
        return histograms[0]
    out = Histogram(histograms[0].bounds)
    for histogram in histograms:
        out.counts = [a + b for a, b in zip(out.counts, histogram.counts, strict=True)]
        out.total += histogram.total
    return out
