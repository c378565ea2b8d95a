"""Downloads that survive a dropped connection and never leave a corrupt file where a dataset is expected.

Bytes land in ``<file>.part``; a second attempt continues from its size (an HTTP Range request, or a seek for
``file://`` mirrors), and the file takes its final name only after its checksum matches. Archives are unpacked with
path checks (tar's ``data`` filter; zip members may not leave the target folder).
"""
from __future__ import annotations

import hashlib
import shutil
import tarfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from dacl.errors import DataError


@dataclass(frozen=True)
class Download:
    """One published file: where it comes from, its checksum when the publisher gives one, and what it unpacks to."""

    url: str
    filename: str
    md5: str | None = None
    unpacks_to: str | None = None  # the folder (relative to the root) the archive creates; present means done


def _digest(path: Path, algorithm: str = "md5") -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch(url: str, dest: Path, md5: str | None = None, timeout: float = 60.0) -> Path:
    """``url`` -> ``dest``, resuming ``dest.part`` where an earlier attempt stopped; checksum verified when given."""
    dest = Path(dest)
    if dest.exists() and (md5 is None or _digest(dest) == md5):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            resumed = have and (url.startswith("file:") or getattr(response, "status", 200) == 206)
            if url.startswith("file:") and have:
                response.read(have)  # a local mirror has no Range support: skip what is already here
            with open(part, "ab" if resumed else "wb") as out:
                shutil.copyfileobj(response, out, length=1 << 20)
    except OSError as exc:
        raise DataError(f"download of {url} failed ({exc}); run again to resume from {part}, or place {dest.name} "
                        f"in {dest.parent} by hand") from exc
    if md5 is not None and (got := _digest(part)) != md5:
        part.unlink()
        raise DataError(f"{url}: checksum mismatch (md5 {got}, expected {md5}); the partial file was removed, run again")
    part.replace(dest)
    return dest


def unpack(archive: Path, into: Path) -> None:
    """Extract a .tar(.gz/.xz), .tgz or .zip into ``into``, refusing members that would land outside it."""
    into = Path(into).resolve()
    name = archive.name.lower()
    if name.endswith(".zip"):
        with zipfile.ZipFile(archive) as z:
            for member in z.namelist():
                if not (into / member).resolve().is_relative_to(into):
                    raise DataError(f"{archive}: member '{member}' would be written outside {into}; not unpacked")
            z.extractall(into)
    elif tarfile.is_tarfile(archive):
        with tarfile.open(archive) as t:
            t.extractall(into, filter="data")
    else:
        raise DataError(f"{archive}: not a zip or tar archive")


def ensure(root: Path, downloads: list[Download], what: str) -> None:
    """Fetch and unpack every missing piece of a dataset into ``root`` (skipping what is already unpacked)."""
    for d in downloads:
        if d.unpacks_to and (root / d.unpacks_to).exists():
            continue
        path = fetch(d.url, root / d.filename, d.md5)
        if d.unpacks_to is not None:
            unpack(path, root)
            if not (root / d.unpacks_to).exists():
                raise DataError(f"{what}: {d.filename} did not unpack to {root / d.unpacks_to}")
