"""One lane of notifications: requests (bulk) or critical, same steps, own workers.

    in ──► route (join settings+devices, validate, dedup, preferences) ──► {ch}-deliver
                │                          (push / email / sms / inapp: sent on the channel's
                │                           own thread, in flight kept in the step's snapshot)
                └──► routed-out: receipts of what is not sent, notify.rejected, re-routed records
"""

from __future__ import annotations

import bytewax.operators as op
from bytewax.dataflow import Dataflow

from dataflows.adapters import deliver_logic, partition_logic
from notiflow import logs, metrics
from notiflow.config import Settings, get_settings
from notiflow.topics import DEVICES, PRESENCE, REQUESTS, SETTINGS, SUBSCRIPTIONS, name
from operators.partition import Routed
from schemas.request import CHANNELS
from sinks.bytewax_sinks import RoutedSink
from sources.user_partitions import CrashLoopConfig, UserPartitionedSource


class Probed(list):
    """A channel's tasks from a careful run's single record: the sink confirms ``probe``
    once it has written them (operators/crash_loop.py)."""

    probe: str


def _unkey(kv: tuple[str, Routed]) -> Routed:
    return kv[1]


def _pick(channel: str):
    """(partition key, this channel's tasks) of a routed batch, or None."""

    def pick(kv: tuple[str, Routed]):
        key, r = kv
        tasks = getattr(r, channel)
        if not tasks:
            return None
        if r.probe is None:
            return key, tasks
        probed = Probed(tasks)
        probed.probe = r.probe
        return key, probed

    return pick


def build_flow(lane: str, cfg: Settings | None = None) -> Dataflow:
    cfg = cfg or get_settings()
    logs.configure()  # JSON lines on stderr, with notification ids where there is one
    metrics.serve(cfg.metrics_port)
    t = cfg.topic_prefix
    flow = Dataflow(f"notiflow-{lane}")
    fanout = lane == REQUESTS  # audiences are expanded on the bulk lane only
    src = UserPartitionedSource(cfg.kafka_brokers, name(lane, t), name(SETTINGS, t),
                                name(DEVICES, t), cfg.partitions, cfg.source_batch,
                                cfg.source_poll_s,
                                subscriptions_topic=name(SUBSCRIPTIONS, t) if fanout else None,
                                presence_topic=name(PRESENCE, t) if fanout else None,
                                crash_loop=CrashLoopConfig(
                                    cfg.redis_url, lane, cfg.crash_loop_scope or t,
                                    cfg.crash_loop_limit,
                                    int(cfg.crash_loop_blame_window_s * 1000)))
    raw = op.input("in", flow, src)  # ("p0003", (3, [(kind, key, value, offset)]))
    keyed = op.stateful_batch("route", raw, partition_logic(cfg, lane))  # (pkey, Routed)
    routed = op.map("unkey", keyed, _unkey)  # Routed
    op.output("routed-out", routed, RoutedSink(cfg, lane))
    for ch in CHANNELS:
        tasks = op.filter_map(f"{ch}-tasks", keyed, _pick(ch))  # (pkey, [DeliveryTask])
        op.stateful_batch(f"{ch}-deliver", tasks, deliver_logic(ch, cfg))
    return flow
