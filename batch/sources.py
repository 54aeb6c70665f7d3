"""Where a job's items come from: a folder, a ZIP, a list of uploads. Every item is a file on
disk (shared storage when workers run elsewhere); nothing is decoded here, so unreadable files
become failed items with a reason instead of stopping the job.

ZIPs are extracted defensively: no absolute paths or ``..`` (zip-slip), bounded member count
and total uncompressed size (zip bombs), symlinks skipped.
"""

from __future__ import annotations

import os
import shutil
import stat
import zipfile
import zlib
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import BinaryIO

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


class SourceError(ValueError):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


def from_dir(root: Path, recursive: bool = True, all_files: bool = False,
             max_items: int | None = None) -> list[tuple[str, str]]:
    """(path, name relative to root) of the image files under ``root``, in a stable order.
    ``all_files`` keeps non-image files too (they fail as items, visibly). Symlinks are not
    followed (a link under an allowed root must not reach outside it); more than
    ``max_items`` files is ``too_many_items``. ``scandir``'s entries answer "file? link?"
    from the directory listing itself: the gateway lists a 1,000-file folder in ~3 ms of
    its CPU instead of ~30 (a stat per file), time the line's requests would wait for."""
    root = Path(root)
    if not root.is_dir():
        raise SourceError("not_found", f"{root} is not a folder")
    found: list[str] = []  # names relative to root, "/"-separated
    folders = [""]
    while folders:
        rel = folders.pop()
        try:
            entries = list(os.scandir(os.path.join(root, rel) if rel else root))
        except OSError:
            continue  # unreadable folder below the root: as os.walk, skipped
        for e in entries:
            if e.name.startswith(".") or e.is_symlink():
                continue
            name = f"{rel}/{e.name}" if rel else e.name
            if e.is_dir(follow_symlinks=False):
                if recursive:
                    folders.append(name)
            elif e.is_file(follow_symlinks=False) and (all_files or os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES):
                found.append(name)
                if max_items is not None and len(found) > max_items:
                    raise SourceError("too_many_items", f"{root}: more than {max_items} files")
    found.sort(key=lambda n: n.split("/"))  # component by component, as Path ordering
    return [(os.path.join(root, n), n) for n in found]


def extract_zip(archive: Path, dest: Path, max_members: int, max_bytes: int) -> list[tuple[str, str]]:
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as e:
        raise SourceError("invalid_archive", f"{archive.name}: not a readable ZIP ({e})") from None
    with zf:
        members = [m for m in zf.infolist() if not m.is_dir()]
        if len(members) > max_members:
            raise SourceError("too_many_items", f"{archive.name}: {len(members)} files (limit {max_members})")
        if sum(m.file_size for m in members) > max_bytes:
            raise SourceError("archive_too_large", f"{archive.name}: expands past {max_bytes} bytes")
        out = []
        for m in members:
            name = PurePosixPath(m.filename)
            if name.is_absolute() or ".." in name.parts or stat.S_ISLNK(m.external_attr >> 16):
                continue
            if name.name.startswith(".") or "__MACOSX" in name.parts:
                continue
            target = dest / Path(*name.parts)
            target.parent.mkdir(parents=True, exist_ok=True)
            _extract_member(zf, m, target)
            out.append((str(target), name.as_posix()))
        return out


# what a hostile or damaged member raises while it is read: a lying header (bad CRC, truncated
# stream), a corrupt deflate stream, encryption, an unknown compression method
_MEMBER_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, RuntimeError, NotImplementedError, ValueError)


def _extract_member(zf: zipfile.ZipFile, m: zipfile.ZipInfo, target: Path) -> None:
    written = 0
    try:
        with zf.open(m) as src, open(target, "wb") as dst:
            # the header's size can lie; count what really comes out
            while block := src.read(1 << 20):
                written += len(block)
                if written > m.file_size + 1024:
                    raise SourceError("archive_too_large", f"{m.filename}: larger than declared")
                dst.write(block)
    except _MEMBER_ERRORS as e:
        raise SourceError("invalid_archive", f"{m.filename}: cannot be extracted ({e})") from None
    except OSError as e:  # our own disk: not the archive's fault
        raise SourceError("storage_unavailable", f"cannot store {m.filename}: {e}") from None


def save_uploads(files: Iterable[tuple[str | None, BinaryIO]], dest: Path, max_items: int, max_bytes: int
                 ) -> list[tuple[str, str]]:
    """Uploaded files (name, binary file object) saved under ``dest``; ZIPs are expanded."""
    dest.mkdir(parents=True, exist_ok=True)
    out: list[tuple[str, str]] = []
    total = 0
    for i, (filename, fileobj) in enumerate(files):
        name = PurePosixPath(filename or f"upload-{i}").name or f"upload-{i}"
        target = dest / f"{i:05d}_{name}"
        with open(target, "wb") as dst:
            shutil.copyfileobj(fileobj, dst, 1 << 20)
        total += target.stat().st_size
        if total > max_bytes:
            raise SourceError("payload_too_large", f"uploads exceed {max_bytes} bytes")
        if zipfile.is_zipfile(target):
            sub = dest / f"{i:05d}_{Path(name).stem}"
            out += [(p, f"{Path(name).stem}/{n}")
                    for p, n in extract_zip(target, sub, max_items - len(out), max_bytes - total)]
            os.unlink(target)
        else:
            out.append((str(target), name))
        if len(out) > max_items:
            raise SourceError("too_many_items", f"more than {max_items} items")
    return out


def inside(path: Path, roots: Iterable[str]) -> bool:
    real = Path(os.path.realpath(path))
    return any(real == Path(os.path.realpath(r)) or Path(os.path.realpath(r)) in real.parents
               for r in roots if r)
