"""Opaque, time-ordered ids with a short type prefix (`sess_01J...`).

A ULID-like value: 48 bits of milliseconds then 80 random bits, in Crockford base32, so ids sort
roughly by creation time and never collide across processes.
"""

import os
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


def new_id(prefix: str) -> str:
    value = (int(time.time() * 1000) << 80) | int.from_bytes(os.urandom(10), "big")
    chars = []
    for _ in range(26):
        chars.append(_ALPHABET[value & 31])
        value >>= 5
    return f"{prefix}_{''.join(reversed(chars))}"
