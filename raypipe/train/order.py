"""The order in which a worker reads its training rows, epoch by epoch (no Ray here).

The first epoch reads the prepared order (shuffled once, globally, by the data preparation); every later epoch
reorders the rows through a seeded shuffle buffer, so no two epochs see the same order, and a resumed run sees the
order the interrupted one saw. The buffer bounds memory: with at least as many slots as rows it is a full
permutation, with fewer a local one.
"""
from __future__ import annotations

import random
from typing import Iterable, Iterator, TypeVar

from raypipe.core.schema import hash64

T = TypeVar("T")


def epoch_order(rows: Iterable[T], seed: int, epoch: int, buffer: int) -> Iterator[T]:
    if epoch == 0 or buffer <= 1:
        yield from rows
        return
    rng = random.Random(hash64("epoch-order", str(seed), str(epoch)))
    held: list[T] = []
    for row in rows:
        if len(held) < buffer:
            held.append(row)
            continue
        i = rng.randrange(buffer)
        yield held[i]
        held[i] = row
    rng.shuffle(held)
    yield from held
