"""Per-tile random streams: a tile's draws depend on what it is, never on how work is batched.

Every random draw of a search (its start code, its noise maps, a sample's start) comes from a
generator seeded by (run seed, field name, tile row, tile column, sample index). The field
enters through a stable hash of its name (not Python's salted `hash`, not its position in a
list), so the same tile gets the same draws at any batch size, in any tile order, on any
machine of a sharded or distributed run, whichever other tiles share its batch.
"""
from __future__ import annotations

import hashlib
from typing import List, NamedTuple, Sequence

import numpy as np


class TileKey(NamedTuple):
    """What a tile is: its field's name and its row and column in that field's tile grid."""

    field: str
    row: int = 0
    col: int = 0


def name_hash(name: str) -> int:
    """A 64-bit hash of a name that is the same in every process and on every machine."""
    return int.from_bytes(hashlib.blake2b(name.encode("utf-8"), digest_size=8).digest(), "little")


def check_seed(seed: int) -> int:
    """Seeds are non-negative integers (numpy's SeedSequence takes no negative entropy)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
    return int(seed)


def tile_seed(seed: int, key: TileKey, sample: int = 0) -> int:
    """The seed of one tile's (and one sample's) random stream, in [0, 2**63)."""
    ss = np.random.SeedSequence(entropy=[check_seed(seed), name_hash(str(key.field))],
                                spawn_key=(int(key.row), int(key.col), int(sample)))
    return int(ss.generate_state(1, dtype=np.uint64)[0] >> np.uint64(1))


def tile_seeds(seed: int, keys: Sequence[TileKey], samples: int = 1) -> List[int]:
    """Seeds for `keys` x `samples`, tile-major (tile 0 sample 0, tile 0 sample 1, ...): the
    order in which the tile driver stacks a batch."""
    return [tile_seed(seed, k, s) for k in keys for s in range(samples)]
