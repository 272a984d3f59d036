"""Retries: notify.retry -> wait (timers) -> the same channel sinks -> receipts / retry / DLQ.

Its own process, so waiting and re-sending never slows either lane.  The stock Bytewax
Kafka input is right here (no cross-topic ordering to keep).

    python -m bytewax.run dataflows.retry:flow
"""

from __future__ import annotations

import bytewax.operators as op
from bytewax.connectors.kafka import operators as kop
from bytewax.dataflow import Dataflow

from dataflows.adapters import retry_wait_logic
from notiflow import logs, metrics
from notiflow.config import Settings, get_settings
from notiflow.topics import RETRY, name
from operators.retry_gate import (
    channel_batch,
    envelope_or_rejected,
    is_envelope,
    partition_key,
    rejected_receipt,
    rejected_record,
)
from sinks.bytewax_sinks import DeliverySink
from sinks.receipt_sink import ReceiptSink
from sinks.rejected import RejectedSink

CHANNELS = ("push", "email", "sms", "inapp")


def build_flow(cfg: Settings | None = None) -> Dataflow:
    cfg = cfg or get_settings()
    logs.configure()  # JSON lines on stderr, with notification ids where there is one
    metrics.serve(cfg.metrics_port)
    flow = Dataflow("notiflow-retry")
    kin = kop.input("in", flow, brokers=cfg.kafka_brokers.split(","),
                    topics=[name(RETRY, cfg.topic_prefix)], tail=True, batch_size=1000)
    # RetryEnvelope | (key, msg, failed receipt or None)
    decoded = op.map("decode", kin.oks, envelope_or_rejected)
    valid = op.branch("valid", decoded, is_envelope)
    envs = valid.trues  # RetryEnvelope
    # bad records, with a reason; and a failed receipt for the notification one still names
    op.output("rejected-out", op.map("rejected", valid.falses, rejected_record),
              RejectedSink(cfg))
    op.output("rejected-receipts-out",
              op.filter_map("rejected-receipts", valid.falses, rejected_receipt),
              ReceiptSink(cfg))
    keyed = op.key_on("by-user-partition", envs, partition_key)  # ("r0003", RetryEnvelope)
    due = op.stateful_batch("wait", keyed, retry_wait_logic)  # (key, [RetryEnvelope])
    for ch in CHANNELS:
        tasks = op.filter_map(f"{ch}-due", due, channel_batch(ch))  # [DeliveryTask]
        op.output(f"{ch}-out", tasks, DeliverySink(ch, cfg))
    return flow


flow = build_flow()
