"""Where the crash-loop breaker (operators/crash_loop.py) keeps what must outlive a crash.

Redis keys (this module owns them); ``{scope}`` is a short hash of the flow's identity
(``NOTIFLOW_CRASH_LOOP_SCOPE``, by default the topic prefix), so two deployments or test
stacks on one Redis never read each other's:

* ``nf:crashloop:{scope}:{lane}:{p}``: the breaker's state of one source partition (JSON), 7 days.
* ``nf:crashloop:{scope}:{lane}:careful``: HASH partition -> until (ms) of the lane's careful
  partitions.  While it has a live entry the lane's other partitions pause, so the record in
  flight is the only one being processed anywhere in the lane when a process dies.
* ``nf:crashloop:{scope}:{lane}:turn``: which careful record is in flight (SET NX, expires with the
  blame window): careful partitions of one lane take turns.
* ``nf:crashloop:{scope}:{lane}:{p}:probe:{run}:{kind}:{offset}``: HASH of one record sent alone by a
  careful run.  The routed-out sink writes ``expect`` (the sinks that get work from it) and
  every sink writes its own name once it has written the record's output; the source sends
  the next record when all have.  ``run`` is per process start, so a rerun never reads an
  earlier run's confirmations.  1 hour.

If Redis is unreachable the breaker is off (logged once), never in the way: a flow must not
stop because its crash-loop memory is gone.
"""

from __future__ import annotations

import hashlib
import logging

import orjson
import redis

log = logging.getLogger(__name__)

STATE_TTL_S = 7 * 24 * 3600
PROBE_TTL_S = 3600
ROUTED = "routed"  # the routed-out sink's part name in a probe


def scoped(scope: str, lane: str) -> str:
    """The lane's key prefix within its deployment: ``nf:crashloop:{hash}:{lane}``."""
    return f"nf:crashloop:{hashlib.sha256(scope.encode()).hexdigest()[:12]}:{lane}"


def state_key(prefix: str, p: int) -> str:
    return f"{prefix}:{p}"


def probe_key(prefix: str, p: int, run: str, kind: int, offset: int) -> str:
    return f"{state_key(prefix, p)}:probe:{run}:{kind}:{offset}"


def careful_key(prefix: str) -> str:
    return f"{prefix}:careful"


def turn_key(prefix: str) -> str:
    return f"{prefix}:turn"


def _client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)


class RedisLoopStore:
    """``LoopStore`` of one (lane, partition)."""

    def __init__(self, url: str, prefix: str, p: int) -> None:
        """``prefix`` = ``scoped(scope, lane)``."""
        self._r = _client(url)
        self._key = state_key(prefix, p)
        self._careful = careful_key(prefix)
        self._turn = turn_key(prefix)
        self._p = str(p)
        self._warned = False
        self._look_at = 0.0  # monotonic s: when others_careful asks Redis again
        self._others = False

    def _down(self, e: Exception) -> None:
        if not self._warned:
            log.warning("crash-loop breaker off for %s: Redis unreachable (%s)", self._key, e)
            self._warned = True

    def load(self) -> dict | None:
        try:
            raw = self._r.get(self._key)
        except redis.RedisError as e:
            self._down(e)
            return None
        try:
            return orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            return None  # unreadable: start afresh

    def save(self, state: dict) -> None:
        try:
            self._r.set(self._key, orjson.dumps(state), ex=STATE_TTL_S)
        except redis.RedisError as e:
            self._down(e)

    def set_careful(self, until_ms: int) -> None:
        """This partition is careful until then (0: not any more)."""
        try:
            if until_ms:
                self._r.hset(self._careful, self._p, until_ms)
                self._r.expire(self._careful, STATE_TTL_S)
            else:
                self._r.hdel(self._careful, self._p)
        except redis.RedisError as e:
            self._down(e)

    def others_careful(self, now_ms: int, mono_s: float) -> bool:
        """Is another partition of the lane careful?  Asked at most every 50 ms (every 5 s
        while Redis does not answer: then nobody is)."""
        if mono_s < self._look_at:
            return self._others
        try:
            h = self._r.hgetall(self._careful)
            self._look_at = mono_s + 0.05
        except redis.RedisError as e:
            self._down(e)
            self._look_at = mono_s + 5.0
            self._others = False
            return False
        self._others = any(int(until) > now_ms for p, until in h.items()
                           if p.decode() != self._p)
        return self._others

    def take_turn(self, probe: str, ttl_ms: int) -> bool:
        """May this careful record go now (no other careful record of the lane in flight)?"""
        try:
            return bool(self._r.set(self._turn, probe, nx=True, px=max(ttl_ms, 1)))
        except redis.RedisError as e:
            self._down(e)
            return True

    def drop_stale_turn(self) -> None:
        """At start: a turn still held by this partition's earlier run (which died with
        its record in flight) is over."""
        try:
            held = self._r.get(self._turn)
            if held is not None and held.decode().startswith(f"{self._key}:probe:"):
                self._r.delete(self._turn)
        except redis.RedisError as e:
            self._down(e)

    def end_turn(self, probe: str) -> None:
        try:
            if self._r.get(self._turn) == probe.encode():
                self._r.delete(self._turn)
        except redis.RedisError as e:
            self._down(e)

    def probe_done(self, key: str) -> bool:
        """Has every sink that got work from the probed record written it?"""
        try:
            h = self._r.hgetall(key)
        except redis.RedisError as e:
            self._down(e)
            return True  # no memory, no waiting
        expect = h.get(b"expect")
        if expect is None:
            return False
        return all(part.encode() in h for part in expect.decode().split(","))

    def close(self) -> None:
        self._r.close()


class ProbeAcks:
    """The sinks' side: confirm a probed record once its output is written."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._r: redis.Redis | None = None

    def ack(self, key: str, part: str, expect: list[str] | None = None) -> None:
        if self._r is None:
            self._r = _client(self._url)
        fields = {part: b"1"}
        if expect is not None:
            fields["expect"] = ",".join(expect).encode()
        try:
            with self._r.pipeline(transaction=False) as pipe:
                pipe.hset(key, mapping=fields)
                pipe.expire(key, PROBE_TTL_S)
                pipe.execute()
        except redis.RedisError as e:  # the source stops waiting after the blame window
            log.warning("crash-loop probe %s not confirmed: %s", key, e)

    def close(self) -> None:
        if self._r is not None:
            self._r.close()
