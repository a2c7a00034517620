"""Content-addressed files: each package and attachment once, under the SHA-256 of its bytes.

A file is written to a temporary name in the store's own directory, fsynced, and renamed into
place; its directory is fsynced before the database transaction that refers to it commits
(:meth:`BlobStore.sync`). A crash therefore leaves either no file or the whole file under its name,
and the database never points at a file that is not on disk. The same bytes written twice (a
redelivery, a re-run after a crash) find their file already there. A file whose transaction never
committed is an orphan; it is harmless and is reused by the retry, and once no row has referred to
it for a grace period it may be removed (:meth:`DocumentStore.remove_orphan_files`). Reusing a file
refreshes its time, so a file about to be referred to again is never old; and :meth:`sync`, run
under the store's write lock, checks that every file this thread put is still there, so a commit can
never refer to a file a removal took away in between.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import uuid
from pathlib import Path
from typing import Iterator

_SHA256 = re.compile(r"[0-9a-f]{64}")


class BlobMissing(RuntimeError):
    """A file put for a change was removed (as an old orphan) before the change committed."""


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._temp = root / "tmp"
        self._temp.mkdir(parents=True, exist_ok=True)
        self._unsynced: set[Path] = set()
        self._lock = threading.Lock()  # the API puts files from several threads
        self._mine = threading.local()  # the files this thread put since its last sync

    def path(self, sha256: str) -> Path:
        if not _SHA256.fullmatch(sha256):
            raise ValueError(f"not a SHA-256 hex digest: {sha256!r}")
        return self.root / sha256[:2] / sha256

    def put(self, data: bytes) -> str:
        """Store ``data`` (fsynced); its SHA-256. Call :meth:`sync` before committing a reference to it."""
        digest = hashlib.sha256(data).hexdigest()
        final = self.path(digest)
        self._put_by_this_thread().add(digest)
        if final.exists() and final.stat().st_size == len(data):
            os.utime(final)  # in use again: not an old orphan
            return digest
        if not final.parent.exists():
            final.parent.mkdir(exist_ok=True)
            with self._lock:
                self._unsynced.add(self.root)  # the new directory's own entry
        temp = self._temp / f"{uuid.uuid4().hex}.part"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, final)
        with self._lock:
            self._unsynced.add(final.parent)
        return digest

    def _put_by_this_thread(self) -> set[str]:
        if not hasattr(self._mine, "digests"):
            self._mine.digests = set()
        return self._mine.digests

    def forget(self) -> None:
        """The change this thread put files for did not commit: they are no longer checked."""
        self._mine.digests = set()

    def sync(self) -> None:
        """Make the renames of every file put since the last call durable (one fsync per directory),
        and check that the files this thread put are all still there (:class:`BlobMissing` if not)."""
        mine, self._mine.digests = self._put_by_this_thread(), set()
        gone = sorted(d for d in mine if not self.path(d).exists())
        if gone:
            raise BlobMissing(f"{len(gone)} files put for this change were removed before it committed "
                              f"(first: {self.path(gone[0])}); nothing was committed: run it again")
        with self._lock:
            directories, self._unsynced = sorted(self._unsynced), set()
        for directory in directories:
            fd = os.open(directory, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def read(self, sha256: str) -> bytes:
        return self.path(sha256).read_bytes()

    def verify(self, sha256: str) -> bool:
        """The file is there and still holds the bytes it is named after."""
        path = self.path(sha256)
        if not path.exists():
            return False
        digest = hashlib.sha256()
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
        return digest.hexdigest() == sha256

    def files(self) -> Iterator[tuple[str, os.stat_result]]:
        """(SHA-256, stat) of every stored file."""
        for directory in self.root.iterdir():
            if len(directory.name) != 2 or not directory.is_dir():
                continue
            for path in directory.iterdir():
                if _SHA256.fullmatch(path.name):
                    found = _stat(path)
                    if found is not None:
                        yield path.name, found

    def temporaries(self) -> Iterator[tuple[Path, os.stat_result]]:
        """Temporary files (a put killed before its rename leaves one)."""
        for path in self._temp.iterdir():
            found = _stat(path)
            if found is not None:
                yield path, found


def _stat(path: Path) -> os.stat_result | None:
    try:
        return path.stat()
    except FileNotFoundError:  # renamed or removed meanwhile
        return None
