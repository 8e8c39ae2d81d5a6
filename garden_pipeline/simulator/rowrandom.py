"""A tiny deterministic random source, cheap enough to build once per generated row.

``random.Random(seed)`` costs several microseconds to seed, which dominates at
a million rows; splitmix64 needs a few integer operations per draw and gives
the same numbers on every platform and Python process (no ``hash()``).
"""

from __future__ import annotations

import zlib
from typing import Sequence, TypeVar

T = TypeVar("T")

_MASK = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_ROW_STRIDE = 0xD1B54A32D192ED03  # odd: spreads consecutive row numbers apart


def mix64(x: int) -> int:
    """splitmix64's finaliser: a well-scrambled 64-bit function of x."""
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _MASK
    return x ^ (x >> 31)


def stream_key(seed: int, *labels: str) -> int:
    """A 64-bit key for one named stream of a seed (e.g. seed 7, entity 'model', 'row')."""
    key = mix64((seed + _GOLDEN) & _MASK)
    for label in labels:
        key = mix64(((key ^ zlib.crc32(label.encode("utf-8"))) + _GOLDEN) & _MASK)
    return key


class RowRandom:
    """splitmix64 generator; ``RowRandom.for_row(key, i)`` is the stream of row i."""

    __slots__ = ("_x",)

    def __init__(self, seed: int):
        self._x = seed & _MASK

    @classmethod
    def for_row(cls, key: int, index: int) -> "RowRandom":
        return cls(key + index * _ROW_STRIDE)

    def next64(self) -> int:
        self._x = x = (self._x + _GOLDEN) & _MASK
        return mix64(x)

    def below(self, n: int) -> int:
        return self.next64() % n

    def between(self, low: int, high: int) -> int:
        """Integer in [low, high]."""
        return low + self.next64() % (high - low + 1)

    def random(self) -> float:
        return (self.next64() >> 11) * (1.0 / 9007199254740992.0)

    def chance(self, p: float) -> bool:
        return self.random() < p

    def choice(self, seq: Sequence[T]) -> T:
        return seq[self.next64() % len(seq)]

    def sample(self, seq: Sequence[T], k: int) -> list[T]:
        """k distinct items, in the order of ``seq`` (stable lists read better)."""
        k = max(0, min(k, len(seq)))
        picked = sorted(range(len(seq)), key=lambda _: self.next64())[:k]
        return [seq[i] for i in sorted(picked)]
