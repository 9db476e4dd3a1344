"""File operations that never lose a file: hashing, atomic writes, safe moves."""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(target: Path, write: Callable[[BinaryIO], object]) -> str:
    """Call ``write(binary_file)`` on a temporary sibling of ``target``, fsync, rename; return the sha256.

    Readers never see a partial file: a crash leaves the old file (or none)
    and at worst a hidden ``.*.tmp`` sibling, never half of the new one.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(6)}.tmp")
    try:
        with open(tmp, "xb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        digest = sha256_file(tmp)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_directory(target.parent)
    return digest


def move_file(source: Path, destination: Path) -> bool:
    """Move ``source`` to ``destination`` (idempotent); True when the file is now there.

    Retrying after a crash is safe: when the source is gone and the destination
    exists, the earlier attempt completed. Symlinks are moved as links, never
    followed.
    """
    if not source.exists() and not source.is_symlink():
        return destination.exists() or destination.is_symlink()
    destination.parent.mkdir(parents=True, exist_ok=True)
    if destination.exists() or destination.is_symlink():
        raise FileExistsError(f"refusing to overwrite {destination} with {source}")
    try:
        os.rename(source, destination)
    except OSError:  # another file system: copy, fsync, then remove the source
        shutil.copy2(source, destination, follow_symlinks=False)
        if not destination.is_symlink():
            with open(destination, "rb") as handle:
                os.fsync(handle.fileno())
        source.unlink()
    fsync_directory(destination.parent)
    return True
