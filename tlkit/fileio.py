"""Writing a file so that a crash or a full disk never leaves it half-written (no tlkit imports above errors).

    atomic_write(path, writer)   write through a temporary file in the same folder, then rename it into place

Here rather than in tlkit.training.rundir so that low layers (tlkit.data.prescan's cache) can use it without
importing the run directory's module, which loads configs.
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Callable

from tlkit.errors import TlkitError


class RunDirError(TlkitError, OSError):
    """The run directory cannot be written (read-only, not a directory, disk full)."""


def describe_os_error(error: OSError) -> str:
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return "disk full"
    if error.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "not writable"
    return error.strerror or str(error)


def _fsync_path(path: str, directory: bool = False) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    except OSError:
        return  # e.g. directories cannot be opened on some platforms: best effort
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path, writer: Callable[[str], object], fsync: bool = True) -> Path:
    """Write `path` through a temporary file in the same folder, then rename it into place.

    `writer(tmp_path)` writes the whole file at `tmp_path` (which keeps `path`'s suffix, so
    Keras's `model.save` accepts it). On any failure the temporary file is removed and the
    previous `path`, if any, is left exactly as it was; an OSError (ENOSPC: "disk full",
    EACCES, EROFS) becomes a RunDirError naming the path.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}{path.suffix}")
    try:
        writer(str(tmp))
        if fsync:
            _fsync_path(str(tmp))
        os.replace(tmp, path)
        if fsync:
            _fsync_path(str(path.parent), directory=True)
    except OSError as error:
        remove_quietly(tmp)
        kept = "the previous file is intact" if path.exists() else "no previous file"
        raise RunDirError(
            f"{describe_os_error(error)} while writing {path} ({error.strerror or error}); {kept}. "
            f"Free space or choose another run directory (hydra.run.dir=...)"
        ) from error
    except BaseException:
        remove_quietly(tmp)
        raise
    return path


def read_json(path, unreadable_ok: bool = False) -> dict:
    """The JSON document in the file `path`; {} when there is no such file. unreadable_ok: {} too when the file
    cannot be read or is not JSON (a summary that must not fail on one broken trial); else that error is raised."""
    path = Path(path)
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        if unreadable_ok:
            return {}
        raise


def remove_quietly(path) -> None:
    try:
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            os.unlink(path)
    except OSError:
        pass
