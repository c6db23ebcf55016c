"""The installation's signing key: HMAC-SHA256 over documents this installation computed (results files).

The key is 32 random bytes in ``$A2FBENCH_HOME/keys/results.key`` (mode 0600), made on first use. Whoever can
read it can sign; nobody else can (a sha256 anyone can recompute; an HMAC needs the key). docs/leaderboard.md
gives the threat model.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from pathlib import Path
from typing import Optional

from . import paths

SCHEME = "hmac-sha256"
KEY_BYTES = 32


def key_path() -> Path:
    return paths.home() / "keys" / "results.key"


def installation_key(create: bool = True) -> Optional[bytes]:
    """This installation's key (made on first use when ``create``); None when there is none and it cannot be
    made (a read-only home): the caller then works unsigned."""
    p = key_path()
    try:
        key = p.read_bytes()
    except FileNotFoundError:
        if not create:
            return None
        try:
            key = _create(p)
        except OSError:
            return None
    except OSError:
        return None
    return key if len(key) == KEY_BYTES else None


def _create(p: Path) -> bytes:
    """Write a fresh key under a temporary name and link it into place: two processes racing both end up
    with the one key that won."""
    p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = p.with_name(f".{p.name}.{secrets.token_hex(6)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(KEY_BYTES))
        try:
            os.link(tmp, p)
        except FileExistsError:
            pass
    finally:
        tmp.unlink(missing_ok=True)
    return p.read_bytes()


def key_id(key: bytes) -> str:
    """A public name of a key (a hash of it, not the key): which installation signed."""
    return "sha256:" + hashlib.sha256(b"a2fbench-key-id:" + key).hexdigest()[:16]


def mac(key: bytes, data: bytes) -> str:
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def matches(key: bytes, data: bytes, value: str) -> bool:
    return hmac.compare_digest(mac(key, data), str(value))
