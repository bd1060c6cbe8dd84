"""Pre-scan of image files before training: every file opened and decoded once with Pillow.

Pure Python + Pillow (no TensorFlow): it runs before TensorFlow starts, so a folder of
broken files fails (or is cleaned up) in seconds, never mid-epoch.

    report = prescan(paths, root="/my/images")
    report.good            # paths that decode
    report.bad             # [BadFile(path, reason)], e.g. "truncated or corrupt JPEG: image file is truncated"
    report.formats()       # {"JPEG": 120, "PNG": 3}
    report.files[path]     # {"ok", "reason", "format", "mode", "size", "frames", "decoder"}

What each file goes through: stat (missing, symlink loop, empty), read (permissions),
`Image.open` (not an image, too large), `verify()` (PNG checksums, missing chunks) and a real
`load()` (truncated data: truncated JPEGs pass `verify()`). JPEGs load in draft mode at 1/8
scale, which still reads every byte, so an 8000x8000 photo costs milliseconds.

Policies (stated here, relied on by tlkit.data.pipeline):
  * Huge images: files above MAX_PIXELS (Pillow's own decompression-bomb threshold,
    89.5 megapixels, e.g. 9459x9459) are bad ("too large"); below it (an 8000x8000 photo
    is 64 MP) they are used, and the pipeline decodes them at full size once, then resizes.
  * Decoder: TensorFlow decodes JPEG, PNG, GIF (first frame) and uncompressed 24/32-bit BMP;
    every other file that Pillow reads (WebP, palette or 16-bit BMP, TIFF with an image
    extension, ...) is decoded by Pillow in the pipeline. The rule (`tf_decodes(head)`) and
    both decoders live in tlkit.data.decode, shared with `tlkit predict` and serving:
    transparency over white, 16-bit scaled by the high byte, grayscale replicated.

Cache: results are kept per folder in a small JSON file under $TLKIT_CACHE_DIR/prescan/
(default ~/.cache/tlkit/prescan/, or $XDG_CACHE_HOME/tlkit/prescan/), and a file is
re-checked only when its size, mtime or ctime changed (ctime: a chmod re-checks it): a rerun
costs one `stat` per file. Failures to read (permissions, links) are never cached: they may
be fixed without touching the file.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional

from PIL import Image

from tlkit.data.decode import HEAD_BYTES, tf_decodes  # pure Python: the rule the pipeline applies in TF ops

log = logging.getLogger("tlkit.data")

SCAN_VERSION = 2  # bump when the checks change: old cache entries are then ignored
MAX_PIXELS = 89_478_485  # PIL.Image.MAX_IMAGE_PIXELS's default: above it, a file is skipped as too large
CACHE_ENV = "TLKIT_CACHE_DIR"

# Entries from the cache are only trusted with this exact set of fields.
_ENTRY_FIELDS = ("ok", "reason", "format", "mode", "size", "frames", "decoder")


@dataclass(frozen=True)
class BadFile:
    path: str
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


@dataclass
class ScanReport:
    """What the pre-scan found: per-file results plus folder-level warnings (symlink loops)."""

    files: Dict[str, dict] = field(default_factory=dict)  # path -> entry (see check_file)
    warnings: List[str] = field(default_factory=list)  # not bad files: e.g. a directory symlink loop that was cut
    folder_errors: List[BadFile] = field(default_factory=list)  # folders that could not be listed
    seconds: float = 0.0
    checked: int = 0  # files decoded this time (the rest came from the cache)

    @property
    def good(self) -> List[str]:
        return [path for path, entry in self.files.items() if entry["ok"]]

    @property
    def bad(self) -> List[BadFile]:
        """Unusable files, then folders that could not be listed, each with its reason."""
        files = [BadFile(path, entry["reason"]) for path, entry in self.files.items() if not entry["ok"]]
        return files + list(self.folder_errors)

    def is_good(self, path: str) -> bool:
        entry = self.files.get(path)
        return bool(entry and entry["ok"])

    def formats(self) -> Dict[str, int]:
        """Usable files per format (JPEG, PNG, ...), most common first."""
        counts: Dict[str, int] = {}
        for entry in self.files.values():
            if entry["ok"]:
                counts[entry["format"]] = counts.get(entry["format"], 0) + 1
        return dict(sorted(counts.items(), key=lambda item: (-item[1], item[0])))

    def pillow_decoded(self) -> int:
        return sum(1 for entry in self.files.values() if entry["ok"] and entry["decoder"] == "pil")

    def merge(self, other: "ScanReport") -> "ScanReport":
        return ScanReport(
            files={**self.files, **other.files},
            warnings=self.warnings + other.warnings,
            folder_errors=self.folder_errors + other.folder_errors,
            seconds=self.seconds + other.seconds,
            checked=self.checked + other.checked,
        )

    def describe_bad(self, limit: int = 5) -> str:
        """The first `limit` bad paths with their reasons, one per line."""
        bad = self.bad
        lines = [f"  {item}" for item in bad[:limit]]
        if len(bad) > limit:
            lines.append(f"  ... and {len(bad) - limit} more")
        return "\n".join(lines)

    def to_dict(self, limit: int = 20) -> dict:
        bad = self.bad
        return {
            "files": len(self.files),
            "usable": len(self.good),
            "bad": len(bad),
            "formats": self.formats(),
            "pillow_decoded": self.pillow_decoded(),
            "bad_files": [{"path": item.path, "reason": item.reason} for item in bad[:limit]],
            "warnings": list(self.warnings[:limit]),
            "checked": self.checked,
            "seconds": round(self.seconds, 3),
        }


# --------------------------------------------------------------------------- one file


def _read(path: str) -> bytes:
    """The file's bytes (a separate function so tests can simulate unreadable files)."""
    with open(path, "rb") as handle:
        return handle.read()


def _entry(ok: bool, reason: Optional[str] = None, **info) -> dict:
    entry = {"ok": ok, "reason": reason, "format": None, "mode": None, "size": None, "frames": 1, "decoder": None}
    entry.update(info)
    return entry


def _sniff(data: bytes) -> Optional[str]:
    """The format the first bytes claim, for messages about files Pillow could not even open."""
    signatures = {b"\xff\xd8\xff": "JPEG", b"\x89PNG": "PNG", b"GIF8": "GIF", b"BM": "BMP"}
    for signature, name in signatures.items():
        if data.startswith(signature):
            return name
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WEBP"
    return None


def _too_large(width: int, height: int) -> str:
    return (f"too large: {width}x{height} = {width * height / 1e6:.0f} megapixels (tlkit's limit is "
            f"{MAX_PIXELS / 1e6:.1f} MP, Pillow's decompression-bomb threshold); downscale it")


def check_file(path: str) -> dict:
    """Open and decode one file; an entry with ok, reason, format, mode, size, frames, decoder.

    Entries with `"cacheable": False` (read errors) are not written to the cache.
    """
    try:
        data = _read(path)
    except OSError as error:  # permission denied, symlink loop, broken link, a FIFO...
        return {**_entry(False, f"cannot read: {error.strerror or error}"), "cacheable": False}
    if not data:
        return _entry(False, "empty file (0 bytes)")
    info: dict = {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # DecompressionBombWarning: MAX_PIXELS is the policy
            with Image.open(io.BytesIO(data)) as image:
                width, height = image.size
                info = {"format": image.format, "mode": image.mode, "size": [width, height],
                        "frames": int(getattr(image, "n_frames", 1) or 1),
                        "decoder": "tf" if tf_decodes(data[:HEAD_BYTES]) else "pil"}
                if width * height > MAX_PIXELS:
                    return _entry(False, _too_large(width, height), **info)
                image.verify()  # checksums and structure (PNG); cheap
            with Image.open(io.BytesIO(data)) as image:
                if image.format in ("JPEG", "MPO"):
                    image.draft("RGB", (max(1, width // 8), max(1, height // 8)))  # every byte read, 1/64 of the pixels
                image.load()  # truncated data fails here, not in verify()
    except Image.DecompressionBombError as error:
        return _entry(False, f"too large: {error}", **info)
    except Image.UnidentifiedImageError:
        return _entry(False, f"not an image: Pillow cannot identify its format (first bytes {data[:8]!r})", **info)
    except Exception as error:  # noqa: BLE001 - any decoder failure is a bad file, with its reason
        kind = info.get("format") or _sniff(data) or "image"
        return _entry(False, f"truncated or corrupt {kind}: {type(error).__name__}: {error}", **info)
    return _entry(True, None, **info)


# --------------------------------------------------------------------------- many files, with the cache


def cache_dir() -> str:
    """$TLKIT_CACHE_DIR/prescan, else $XDG_CACHE_HOME/tlkit/prescan, else ~/.cache/tlkit/prescan."""
    base = os.environ.get(CACHE_ENV)
    if not base:
        base = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "tlkit")
    return os.path.join(base, "prescan")


def _cache_path(root: str) -> str:
    digest = hashlib.sha256(f"v{SCAN_VERSION}\0{os.path.abspath(root)}".encode()).hexdigest()[:24]
    return os.path.join(cache_dir(), f"{digest}.json")


_MEMORY: Dict[str, Dict[str, dict]] = {}  # cache file path -> its entries, so one process reads it once


def _load_cache(path: str) -> Dict[str, dict]:
    if path in _MEMORY:
        return _MEMORY[path]
    entries: Dict[str, dict] = {}
    try:
        with open(path) as handle:
            stored = json.load(handle)
        if stored.get("version") == SCAN_VERSION and isinstance(stored.get("files"), dict):
            entries = stored["files"]
    except (OSError, ValueError):
        pass  # no cache yet, or an unreadable one: scan again
    _MEMORY[path] = entries
    return entries


def _save_cache(path: str, root: str, entries: Dict[str, dict]) -> None:
    from tlkit.fileio import atomic_write  # pure Python, no TensorFlow

    payload = json.dumps({"version": SCAN_VERSION, "root": os.path.abspath(root), "files": entries})
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        atomic_write(path, lambda tmp: Path(tmp).write_text(payload), fsync=False)
    except Exception as error:  # noqa: BLE001 - a cache that cannot be written is only slower next time
        log.debug("pre-scan cache not written to %s: %s", path, error)


def _stat_key(path: str):
    try:
        st = os.stat(path)
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns]  # ctime: a chmod (now unreadable?) re-checks the file


def prescan(paths: Iterable[str], root: Optional[str] = None, workers: Optional[int] = None,
            use_cache: bool = True) -> ScanReport:
    """Check every file in `paths` (in parallel threads; Pillow releases the GIL while decoding).

    `root` names the cache file (default: the files' common folder).
    """
    started = time.time()
    paths = list(dict.fromkeys(str(p) for p in paths))  # unique, order kept
    if not paths:
        return ScanReport()
    root = root or os.path.commonpath([os.path.abspath(p) for p in paths])
    cache_file = _cache_path(root)
    cached = _load_cache(cache_file) if use_cache else {}

    results: Dict[str, dict] = {}
    keys = {path: _stat_key(path) for path in paths}
    todo = []
    for path in paths:
        hit = cached.get(path)
        if hit is not None and keys[path] is not None and hit.get("key") == keys[path] and \
                all(name in hit for name in _ENTRY_FIELDS):
            results[path] = {name: hit[name] for name in _ENTRY_FIELDS}
        else:
            todo.append(path)
    if todo:
        workers = workers or max(2, min(16, (os.cpu_count() or 2) * 2))
        if len(todo) > 1 and workers > 1:
            with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tlkit-prescan") as pool:
                checked = list(pool.map(check_file, todo))
        else:
            checked = [check_file(path) for path in todo]
        changed = False
        for path, entry in zip(todo, checked):
            cacheable = entry.pop("cacheable", True)
            results[path] = entry
            if use_cache and cacheable and keys[path] is not None:
                cached[path] = {**entry, "key": keys[path]}
                changed = True
        if changed:
            # Keep entries of files outside this call (another split under the same root) while they exist.
            stale = [p for p in cached if p not in results and not os.path.lexists(p)]
            for p in stale:
                del cached[p]
            _save_cache(cache_file, root, cached)
    ordered = {path: results[path] for path in paths}
    return ScanReport(files=ordered, seconds=time.time() - started, checked=len(todo))
