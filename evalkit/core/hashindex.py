"""A compact hash table of 64-bit keys (optionally to 64-bit values): 16 to 32 bytes an entry, where a Python set
of ints takes about 80 and a dict about 110 — the index a large run keeps of what it has seen.

Keys are slices of sha256 digests (example ids, journal keys), so they are spread evenly already: the table
probes linearly from the key's low bits. It holds exact keys; a caller that cuts a longer hash to 64 bits
checks what it finds (the journal reads the line back and compares the full key).
"""

from __future__ import annotations

from array import array

_EMPTY = 0  # marks a free slot; the key 0 itself is held aside
_MASK64 = (1 << 64) - 1


class HashIndex:
    """A set of 64-bit keys, or a map of them to signed 64-bit values (`values=True`)."""

    def __init__(self, values: bool = False):
        self._size = 0
        self._keys = array("Q", bytes(8 * 16))
        self._values: array[int] | None = array("q", bytes(8 * 16)) if values else None
        self._zero: int | None = None  # key 0's value (0 for a set) when present

    def __len__(self) -> int:
        return self._size

    def _slot(self, key: int) -> int:
        keys, mask = self._keys, len(self._keys) - 1
        i = key & mask
        while True:
            found = keys[i]
            if found == key or found == _EMPTY:
                return i
            i = (i + 1) & mask

    def _grow(self) -> None:
        keys, values = self._keys, self._values
        self._keys = array("Q", bytes(16 * len(keys)))
        self._values = array("q", bytes(16 * len(keys))) if values is not None else None
        for i, key in enumerate(keys):
            if key != _EMPTY:
                slot = self._slot(key)
                self._keys[slot] = key
                if values is not None and self._values is not None:
                    self._values[slot] = values[i]

    def put(self, key: int, value: int = 0) -> int | None:
        """Add `key` (a value of 0..2**64-1), with `value` in a map; returns the value it had (0 in a set), or
        None when it is new."""
        key &= _MASK64
        if key == _EMPTY:
            before = self._zero
            self._size += before is None
            self._zero = value
            return before
        slot = self._slot(key)
        before = None
        if self._keys[slot] == _EMPTY:
            self._keys[slot] = key
            self._size += 1
        else:
            before = self._values[slot] if self._values is not None else 0
        if self._values is not None:
            self._values[slot] = value
        if 2 * self._size > len(self._keys):  # at most half full: probes stay short
            self._grow()
        return before

    def add(self, key: int) -> bool:
        """Add `key`; whether it was new."""
        return self.put(key) is None

    def get(self, key: int) -> int | None:
        """The value of `key` in a map (0 in a set), or None when absent."""
        key &= _MASK64
        if key == _EMPTY:
            return self._zero
        slot = self._slot(key)
        if self._keys[slot] == _EMPTY:
            return None
        return self._values[slot] if self._values is not None else 0

    def __contains__(self, key: int) -> bool:
        return self.get(key) is not None
