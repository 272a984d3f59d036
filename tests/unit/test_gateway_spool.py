"""The gateway's disk spool: order, crash safety (torn tails), commit, segment rotation,
one process per folder."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from gateway.producer import OutRecord, decode_record, encode_record
from gateway.spool import Spool, SpoolCorrupt, SpoolLocked
from stack.services import ROOT


def drain(spool: Spool, chunk: int = 3) -> list[bytes]:
    out = []
    while True:
        got, pos = spool.read(chunk)
        if not got:
            return out
        out += got
        spool.commit(pos, len(got))


def test_reads_back_in_order_and_commits(tmp_path):
    s = Spool(tmp_path)
    s.append([b"a", b"b"])
    s.append([b"c"])
    assert s.pending == 3
    got, pos = s.read(2)
    assert got == [b"a", b"b"]
    s.commit(pos, 2)
    assert s.pending == 1
    assert drain(s) == [b"c"]
    assert s.pending == 0


def test_uncommitted_records_survive_a_restart(tmp_path):
    s = Spool(tmp_path)
    s.append([b"%d" % i for i in range(5)])
    got, pos = s.read(2)
    s.commit(pos, 2)
    s.read(2)  # read, never committed: a crash before Kafka acked them
    s.close()
    s2 = Spool(tmp_path)
    assert s2.pending == 3
    assert drain(s2) == [b"2", b"3", b"4"]


def test_a_torn_tail_is_cut_off_and_appends_continue(tmp_path):
    s = Spool(tmp_path)
    s.append([b"whole"])
    s.close()
    seg = next(tmp_path.glob("*.spool"))
    with open(seg, "ab") as f:  # a crash halfway through the next append
        f.write(b"\x00\x00\x00\x10\x12\x34")
    s2 = Spool(tmp_path)
    assert s2.pending == 1
    s2.append([b"after"])
    assert drain(s2) == [b"whole", b"after"]


def test_a_bad_record_in_the_middle_is_an_error_not_a_silent_skip(tmp_path):
    s = Spool(tmp_path)
    s.append([b"first", b"second"])
    seg = next(tmp_path.glob("*.spool"))
    data = bytearray(seg.read_bytes())
    data[9] ^= 0xFF  # flip a byte of "first"
    seg.write_bytes(bytes(data))
    with pytest.raises(SpoolCorrupt):
        s.read(10)


def test_segments_rotate_and_delivered_ones_are_deleted(tmp_path):
    s = Spool(tmp_path, segment_bytes=64)
    payloads = [b"x" * 30 + b"%02d" % i for i in range(10)]
    for p in payloads:
        s.append([p])
    assert len(list(tmp_path.glob("*.spool"))) > 3
    s.close()
    s = Spool(tmp_path, segment_bytes=64)
    assert s.pending == 10
    assert drain(s, chunk=4) == payloads
    assert len(list(tmp_path.glob("*.spool"))) == 1  # a fresh, empty one
    s.append([b"again"])
    assert drain(s) == [b"again"]


def test_empty_spool_reopens_empty(tmp_path):
    s = Spool(tmp_path)
    s.append([b"a"])
    drain(s)
    s.close()
    assert Spool(tmp_path).pending == 0


def test_out_record_round_trips():
    r = OutRecord("notify.requests", b'{"v":1}', b"u1", 3)
    assert decode_record(encode_record(r)) == r


def test_a_second_spool_on_the_same_folder_is_refused_with_the_holders_pid(tmp_path):
    """Two gateways on one folder appended to and deleted the same segments."""
    s = Spool(tmp_path)
    with pytest.raises(SpoolLocked, match=f"{tmp_path}.*pid {os.getpid()}"):
        Spool(tmp_path)
    s.append([b"a"])
    s.close()
    assert Spool(tmp_path).pending == 1  # free once the holder closed


def test_the_lock_goes_with_the_holding_process(tmp_path):
    """A gateway killed -9 leaves no stale lock behind (the kernel drops it)."""
    code = f"from gateway.spool import Spool; Spool({str(tmp_path)!r}); print('held', flush=True)"
    holder = subprocess.Popen([sys.executable, "-c", code + "; import time; time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(SpoolLocked, match=f"pid {holder.pid}"):
            Spool(tmp_path)
    finally:
        holder.kill()
        holder.wait()
    Spool(tmp_path).close()
