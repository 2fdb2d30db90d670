"""Files and directories only their owner can read (0600 / 0700), private from the moment they exist:
created with that mode, never loosened by the umask and chmod-ed afterwards (a window in which another
user could open them). For secrets, keys, certificates, logs and data directories."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600
PRIVATE_UMASK = 0o077  # for child processes (subprocess umask=) and libraries that create files themselves


@contextmanager
def private_umask() -> Iterator[None]:
    """Everything this process creates meanwhile is private. The umask is process-wide: keep it short."""
    previous = os.umask(PRIVATE_UMASK)
    try:
        yield
    finally:
        os.umask(previous)


def private_dir(path: str | os.PathLike) -> Path:
    """Make `path` (and any missing parents) as 0700 directories; an existing directory is left as is."""
    path = Path(path)
    with private_umask():
        path.mkdir(mode=PRIVATE_DIR_MODE, parents=True, exist_ok=True)
    return path


def write_private(path: str | os.PathLike, content: str | bytes) -> Path:
    """Write a 0600 file atomically: a new file opened with that mode, then renamed over `path`."""
    path = Path(path)
    data = content.encode() if isinstance(content, str) else content
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(data)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path


def open_private_append(path: str | os.PathLike) -> BinaryIO:
    """Open a log file for appending, creating it 0600."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, PRIVATE_FILE_MODE)
    return os.fdopen(fd, "ab")
