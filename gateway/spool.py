"""A local disk spool: what the gateway accepted while Kafka could not take it.

Why: a 202 promises the request is not lost, so when Kafka does not answer the request
must be on disk (fsynced) before the 202, and go to Kafka later in the order it was
accepted.  Layout under one directory:

* ``<n>.spool`` segments, append-only.  A record is ``>II`` (length, crc32) + payload; a
  crash mid-append leaves a torn tail that was never acknowledged, so opening truncates the
  last segment to its last whole record.
* ``cursor``: ``<segment> <offset>`` of the first record not yet delivered, replaced
  atomically (write, fsync, rename).  Delivered segments are deleted.
* ``lock``: held (``flock``, exclusive) by the one process using the folder, with its pid
  in it.  Two gateways appending to and deleting the same segments would lose records, so
  a second one fails to open the spool (SpoolLocked); the kernel drops the lock when the
  holder exits, however it exits.

Delivery is at-least-once: a crash between Kafka's ack and the cursor write sends those
records again, and the flow deduplicates them (same id / dedup key).

Thread-safe: the gateway appends and replays from worker threads (fsync blocks).
"""

from __future__ import annotations

import fcntl
import os
import struct
import threading
import zlib
from pathlib import Path

_HEADER = struct.Struct(">II")
_SUFFIX = ".spool"
MAX_RECORD = 64 * 1024 * 1024


class SpoolCorrupt(RuntimeError):
    """A record in the middle of the spool fails its checksum (not a torn tail)."""


class SpoolLocked(RuntimeError):
    """Another process holds the spool folder."""


def _lock(directory: Path) -> int:
    """An fd holding the folder's exclusive lock (our pid written in the file)."""
    fd = os.open(directory / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise SpoolLocked(f"spool folder {directory} is in use by another process (pid "
                          f"{holder}): give each gateway its own NOTIFLOW_GATEWAY_SPOOL_DIR"
                          ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _scan(path: Path, start: int = 0) -> tuple[int, int]:
    """(whole records, end offset of the last whole record) of a segment from ``start``."""
    n, pos = 0, start
    with open(path, "rb") as f:
        f.seek(start)
        while True:
            head = f.read(_HEADER.size)
            if len(head) < _HEADER.size:
                return n, pos
            length, crc = _HEADER.unpack(head)
            if length > MAX_RECORD:
                return n, pos
            body = f.read(length)
            if len(body) < length or zlib.crc32(body) != crc:
                return n, pos
            n += 1
            pos += _HEADER.size + length


class Spool:
    """Append records (fsynced), read them back in order, commit what was delivered."""

    def __init__(self, directory: str | Path, segment_bytes: int = 64 * 1024 * 1024) -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._lock_fd = _lock(self.dir)
        try:
            self._open(segment_bytes)
        except BaseException:
            os.close(self._lock_fd)
            raise

    def _open(self, segment_bytes: int) -> None:
        self._segment_bytes = segment_bytes
        self._lock = threading.Lock()
        segs = self._segments()
        self._cursor = self._read_cursor(segs)
        if not segs:
            segs = [self._cursor[0]]
            self._create(segs[0])
        # a crash mid-append leaves a torn tail: it was never acknowledged, cut it off
        last = segs[-1]
        _, end = _scan(self._path(last))
        with open(self._path(last), "r+b") as f:
            if f.seek(0, 2) != end:
                f.truncate(end)
                os.fsync(f.fileno())
        self._tail = (last, end)
        self._writer = open(self._path(last), "ab")  # noqa: SIM115 (kept open)
        self._pending = self._count_pending(segs)

    # --- paths and cursor ---------------------------------------------------------------

    def _path(self, seg: int) -> Path:
        return self.dir / f"{seg:012d}{_SUFFIX}"

    def _segments(self) -> list[int]:
        return sorted(int(p.stem) for p in self.dir.glob(f"*{_SUFFIX}") if p.stem.isdigit())

    def _create(self, seg: int) -> None:
        self._path(seg).touch()
        _fsync_dir(self.dir)

    def _read_cursor(self, segs: list[int]) -> tuple[int, int]:
        try:
            seg, off = (int(x) for x in (self.dir / "cursor").read_text().split())
        except (OSError, ValueError):
            return (segs[0], 0) if segs else (1, 0)
        if segs and seg < segs[0]:  # its segment was deleted: start at the oldest left
            return segs[0], 0
        return seg, off

    def _write_cursor(self, seg: int, off: int) -> None:
        tmp = self.dir / "cursor.tmp"
        with open(tmp, "w") as f:
            f.write(f"{seg} {off}\n")
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(self.dir / "cursor")
        _fsync_dir(self.dir)

    def _count_pending(self, segs: list[int]) -> int:
        seg0, off0 = self._cursor
        return sum(_scan(self._path(s), off0 if s == seg0 else 0)[0] for s in segs if s >= seg0)

    # --- the API --------------------------------------------------------------------------

    @property
    def pending(self) -> int:
        """Records appended and not yet committed as delivered."""
        return self._pending

    def append(self, payloads: list[bytes]) -> None:
        """Write every payload and fsync once: when this returns they survive a crash."""
        if not payloads:
            return
        frames = b"".join(_HEADER.pack(len(p), zlib.crc32(p)) + p for p in payloads)
        with self._lock:
            seg, end = self._tail
            if end >= self._segment_bytes:
                self._writer.close()
                seg, end = seg + 1, 0
                self._create(seg)
                self._writer = open(self._path(seg), "ab")  # noqa: SIM115
            try:
                self._writer.write(frames)
                self._writer.flush()
                os.fsync(self._writer.fileno())
            except OSError:
                # disk full or failing: cut back what was half written, then say so
                self._writer.close()
                with open(self._path(seg), "r+b") as f:
                    f.truncate(end)
                self._writer = open(self._path(seg), "ab")  # noqa: SIM115
                raise
            self._tail = (seg, end + len(frames))
            self._pending += len(payloads)

    def read(self, max_records: int) -> tuple[list[bytes], tuple[int, int]]:
        """Up to ``max_records`` from the cursor, and the position just after them."""
        with self._lock:
            seg, off = self._cursor
            tail = self._tail
        out: list[bytes] = []
        while len(out) < max_records and (seg, off) < tail:
            limit = tail[1] if seg == tail[0] else None
            path = self._path(seg)
            if not path.exists():
                raise SpoolCorrupt(f"{path} is missing (cursor at {seg} {off})")
            with open(path, "rb") as f:
                f.seek(off)
                while len(out) < max_records and (limit is None or off < limit):
                    head = f.read(_HEADER.size)
                    if len(head) < _HEADER.size:
                        break
                    length, crc = _HEADER.unpack(head)
                    body = f.read(length)
                    if len(body) < length or zlib.crc32(body) != crc:
                        raise SpoolCorrupt(f"{path}: bad record at offset {off}")
                    out.append(body)
                    off += _HEADER.size + length
            if len(out) < max_records and seg < tail[0] and (limit is None):
                seg, off = seg + 1, 0  # this segment is read through: the next one
        return out, (seg, off)

    def commit(self, position: tuple[int, int], count: int) -> None:
        """Mark records up to ``position`` (``count`` of them) delivered; drop old segments."""
        with self._lock:
            seg, off = position
            if (seg, off) == self._tail and off > 0:
                # all delivered: start a fresh segment so the spool does not grow forever
                self._writer.close()
                seg, off = seg + 1, 0
                self._create(seg)
                self._writer = open(self._path(seg), "ab")  # noqa: SIM115
                self._tail = (seg, 0)
            self._write_cursor(seg, off)
            self._cursor = (seg, off)
            self._pending = max(0, self._pending - count)
            for old in self._segments():
                if old < seg:
                    self._path(old).unlink(missing_ok=True)

    def close(self) -> None:
        with self._lock:
            self._writer.close()
            if self._lock_fd >= 0:
                os.close(self._lock_fd)  # the folder is free for the next gateway
                self._lock_fd = -1
