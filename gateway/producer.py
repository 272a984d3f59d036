"""The gateway's way to Kafka: acked by all replicas, or fsynced in the spool, before a 202.

Why this shape: a 202 must mean "will reach Kafka", and the gateway must stay fast.  One
confluent-kafka producer (``acks=all``, idempotent, so retries keep per-partition order)
serves every request; a thread polls it and resolves each message's asyncio future on the
event loop from the delivery callback, so no request waits for a flush.

If a message is not acked within ``gateway_kafka_timeout_ms`` (or librdkafka reports every
broker down), the gateway switches to *spooling*: records go to the disk spool
(gateway/spool.py), fsynced, and a background task replays them in order once Kafka
answers again.  While the spool holds anything, new records go behind it, so the order
records were accepted in is the order Kafka sees them (per partition, the only order Kafka
keeps).  Delivery is at-least-once; a record sent twice has the same id and dedup key and
the flow drops the copy.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec
from confluent_kafka import KafkaError, KafkaException, Producer

from gateway.spool import Spool
from notiflow import metrics
from notiflow.config import Settings

log = logging.getLogger(__name__)


class OutRecord(msgspec.Struct, array_like=True, frozen=True):
    """One Kafka record as the spool stores it."""

    topic: str
    value: bytes | None  # None: a tombstone (device deleted, unsubscribed)
    key: bytes | None = None
    partition: int = -1  # -1: librdkafka's partitioner (CRC32 of the key)


_enc = msgspec.msgpack.Encoder()
_dec = msgspec.msgpack.Decoder(OutRecord)


@dataclass
class _Health:
    kafka_up: bool = True


class GatewayProducer:
    """``await send(records)`` returns once every record is in Kafka or in the spool."""

    def __init__(self, settings: Settings, spool: Spool | None = None) -> None:
        self.settings = settings
        self._timeout_s = settings.gateway_kafka_timeout_ms / 1000
        self._fatal = False
        self._kafka = self._new_producer()
        self.spool = spool or Spool(settings.gateway_spool_dir, settings.gateway_spool_segment_bytes)
        self._health = _Health(kafka_up=self.spool.pending == 0)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = asyncio.Lock()  # appends vs. "the spool is empty again"
        self._spooling = self.spool.pending > 0
        self._wake = asyncio.Event()
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        self._replayer: asyncio.Task | None = None
        metrics.GATEWAY_SPOOL_PENDING.set(self.spool.pending)

    def _new_producer(self) -> Producer:
        return Producer({
            "bootstrap.servers": self.settings.kafka_brokers,
            "acks": "all",
            "enable.idempotence": True,  # retries never reorder a partition
            "linger.ms": 2,
            "message.timeout.ms": self.settings.gateway_kafka_timeout_ms,
            "socket.connection.setup.timeout.ms": 2000,
            "reconnect.backoff.max.ms": 1000,
            "error_cb": self._on_error,
            "logger": logging.getLogger("librdkafka"),  # JSON like every other log line
        })

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._poller = threading.Thread(target=self._poll, name="kafka-poll", daemon=True)
        self._poller.start()
        self._replayer = asyncio.create_task(self._replay_forever(), name="spool-replay")
        if self._spooling:
            log.warning("spool holds %d record(s) from before: replaying them first",
                        self.spool.pending)
            self._wake.set()

    async def close(self) -> None:
        if self._replayer is not None:
            self._replayer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._replayer
        left = await asyncio.to_thread(self._kafka.flush, self._timeout_s)
        self._stop.set()
        if self._poller is not None:
            self._poller.join(5)
        self.spool.close()
        if left:
            log.warning("%d record(s) unacked at shutdown: their requests got no 202", left)

    def _poll(self) -> None:
        """Serve delivery callbacks; replace the producer after a fatal error."""
        while not self._stop.is_set():
            try:
                self._kafka.poll(0.05)
            except KafkaException as e:  # a fatal error surfaces here too
                if not self._fatal:
                    log.error("kafka producer: %s", e)
                self._fatal = True
            if self._fatal:
                self._replace_producer()

    def _replace_producer(self) -> None:
        """A fatal producer (e.g. a broker that lost its state no longer knows our
        idempotent producer id) accepts nothing more: fail what it holds (those records
        get spooled by their senders) and carry on with a new one."""
        self._fatal = False
        old, self._kafka = self._kafka, self._new_producer()
        with contextlib.suppress(KafkaException):
            old.purge(in_queue=True, in_flight=True)
        for _ in range(3):
            with contextlib.suppress(KafkaException):
                old.flush(1)
        log.warning("kafka producer replaced after a fatal error")

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal():
            log.error("kafka producer fatal error: %s", err)
            self._fatal = True  # the poll thread replaces the producer
        if err.fatal() or err.code() == KafkaError._ALL_BROKERS_DOWN:
            self._health.kafka_up = False
            metrics.GATEWAY_KAFKA_UP.set(0)

    @property
    def spooling(self) -> bool:
        return self._spooling

    # --- sending --------------------------------------------------------------------------

    async def produce(self, topic: str, value: bytes, key: bytes | str | None = None,
                      partition: int = -1) -> None:
        """One record (G2 and D publish settings/devices with this)."""
        if isinstance(key, str):
            key = key.encode()
        await self.send([OutRecord(topic, value, key, partition)])

    async def send(self, records: Sequence[OutRecord]) -> str:
        """Kafka-acked or spooled when this returns; says which ("kafka" | "spool")."""
        if not records:
            return "kafka"
        if not self._spooling and self._health.kafka_up:
            failed = await self._produce_all(records)
            if not failed:
                return "kafka"
            records = failed
            self._enter_spooling(f"{len(failed)} record(s) not acked")
        await self._append(records)
        return "spool"

    async def _produce_all(self, records: Sequence[OutRecord]) -> list[OutRecord]:
        """Produce and await every ack; return the records that failed (in order)."""
        loop = self._loop or asyncio.get_running_loop()
        futs: list[asyncio.Future] = []
        failed_now: list[int] = []
        for i, r in enumerate(records):
            fut = loop.create_future()
            futs.append(fut)
            try:
                self._kafka.produce(r.topic, r.value, r.key, partition=r.partition,
                                    on_delivery=_resolver(loop, fut))
            except (BufferError, KafkaException) as e:
                fut.set_result(e)
                failed_now.append(i)
        results = await asyncio.gather(*futs)
        failed = [r for r, res in zip(records, results, strict=True) if res is not None]
        if not failed:
            self._health.kafka_up = True
            metrics.GATEWAY_KAFKA_UP.set(1)
        else:
            log.warning("kafka did not ack %d of %d record(s): %s", len(failed), len(records),
                        next(res for res in results if res is not None))
        return failed

    def _enter_spooling(self, why: str) -> None:
        if not self._spooling:
            log.warning("kafka unavailable (%s): spooling to %s", why, self.spool.dir)
        self._spooling = True
        self._health.kafka_up = False
        metrics.GATEWAY_KAFKA_UP.set(0)
        self._wake.set()

    async def _append(self, records: Sequence[OutRecord]) -> None:
        payloads = [_enc.encode(r) for r in records]
        async with self._lock:
            self._spooling = True
            await asyncio.to_thread(self.spool.append, payloads)
        metrics.GATEWAY_SPOOLED.inc(len(payloads))
        metrics.GATEWAY_SPOOL_PENDING.set(self.spool.pending)
        self._wake.set()

    # --- replay ---------------------------------------------------------------------------

    async def _replay_forever(self) -> None:
        """Drain the spool into Kafka in order whenever it holds something."""
        backoff = 0.2
        while True:
            if not self._spooling:
                self._wake.clear()
                # kafka_up may be false with an empty spool (error_cb): probe by traffic
                await self._wake.wait()
                continue
            try:
                drained = await self._replay_chunk()
                backoff = 0.2
                if drained:
                    continue
            except Exception as e:  # noqa: BLE001 (the replayer must never die)
                log.warning("spool replay: %s; retrying in %.1f s", e, backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 2.0)

    async def _replay_chunk(self, max_records: int = 1000) -> bool:
        """Send the next chunk; True if it went through (False: Kafka still away)."""
        payloads, pos = await asyncio.to_thread(self.spool.read, max_records)
        if not payloads:
            async with self._lock:  # no append can slip in between the check and the switch
                if self.spool.pending == 0:
                    self._spooling = False
                    self._health.kafka_up = True
                    metrics.GATEWAY_KAFKA_UP.set(1)
                    metrics.GATEWAY_SPOOL_PENDING.set(0)
                    log.info("spool drained: producing to kafka directly again")
            return True
        records = [_dec.decode(p) for p in payloads]
        failed = await self._produce_all(records)
        if failed:
            # resend from the first failure on: per partition the first copies stay in order
            first = len(records) - len(failed)
            for i, r in enumerate(records):
                if r is failed[0]:
                    first = i
                    break
            if first == 0:
                return False
            payloads, pos = await asyncio.to_thread(self.spool.read, first)
        await asyncio.to_thread(self.spool.commit, pos, len(payloads))
        metrics.GATEWAY_REPLAYED.inc(len(payloads))
        metrics.GATEWAY_SPOOL_PENDING.set(self.spool.pending)
        return not failed


def _resolver(loop: asyncio.AbstractEventLoop, fut: asyncio.Future):
    """A delivery callback (poll thread) that resolves ``fut`` with None or the error."""

    def on_delivery(err, _msg) -> None:
        loop.call_soon_threadsafe(_set, fut, err)

    return on_delivery


def _set(fut: asyncio.Future, err) -> None:
    if not fut.done():
        fut.set_result(err)


def decode_record(payload: bytes) -> OutRecord:
    return _dec.decode(payload)


def encode_record(record: OutRecord) -> bytes:
    return _enc.encode(record)
