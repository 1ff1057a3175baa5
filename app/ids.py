"""Stable identifiers derived from natural keys."""

from __future__ import annotations

import hashlib
import unicodedata

# Integers that survive JavaScript (Number.MAX_SAFE_INTEGER = 2**53 - 1).
MAX_SAFE_INT = 2**53 - 1


def normalize_key(text: str) -> str:
    """Case- and space-insensitive form of a name: NFC, casefolded, single spaces."""
    return " ".join(unicodedata.normalize("NFC", text).casefold().split())


def stable_int_id(*parts: str) -> int:
    """A positive integer id derived from a natural key, the same on every site.

    Two sites that import the same inventory give each album the same id, so
    their events replicate into one aggregate instead of two look-alikes.
    """
    digest = hashlib.blake2b("\x1f".join(parts).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % MAX_SAFE_INT + 1
