"""Content-addressed files: each package and attachment once, under the SHA-256 of its bytes.

A file is written to a temporary name in the store's own directory, fsynced, and renamed into
place; its directory is fsynced before the database transaction that refers to it commits
(:meth:`BlobStore.sync`). A crash therefore leaves either no file or the whole file under its name,
and the database never points at a file that is not on disk. The same bytes written twice (a
redelivery, a re-run after a crash) find their file already there. A file whose transaction never
committed is an orphan; it is harmless and is reused by the retry.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import uuid
from pathlib import Path

_SHA256 = re.compile(r"[0-9a-f]{64}")


class BlobStore:
    def __init__(self, root: Path) -> None:
        self.root = root
        self._temp = root / "tmp"
        self._temp.mkdir(parents=True, exist_ok=True)
        self._unsynced: set[Path] = set()
        self._lock = threading.Lock()  # the API puts files from several threads

    def path(self, sha256: str) -> Path:
        if not _SHA256.fullmatch(sha256):
            raise ValueError(f"not a SHA-256 hex digest: {sha256!r}")
        return self.root / sha256[:2] / sha256

    def put(self, data: bytes) -> str:
        """Store ``data`` (fsynced); its SHA-256. Call :meth:`sync` before committing a reference to it."""
        digest = hashlib.sha256(data).hexdigest()
        final = self.path(digest)
        if final.exists() and final.stat().st_size == len(data):
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

    def sync(self) -> None:
        """Make the renames of every file put since the last call durable (one fsync per directory)."""
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
