"""Prometheus metrics of the flow processes, served on ``NOTIFLOW_METRICS_PORT`` (0: off).

Counted per batch in the sinks, so the cost is a few increments per write, not per item.
"""

from __future__ import annotations

import logging

from prometheus_client import Counter, Gauge, start_http_server

log = logging.getLogger(__name__)

DELIVERIES = Counter("notiflow_deliveries", "terminal outcomes written as receipts",
                     ["channel", "provider", "outcome"])
RETRIES = Counter("notiflow_retries", "sends put on notify.retry", ["channel", "provider"])
DEAD_LETTERS = Counter("notiflow_dead_letters", "tasks put on notify.dlq", ["channel"])
MARKERS_UNAVAILABLE = Counter("notiflow_sent_markers_unavailable",
                              "sink batches handled without Redis sent-markers (Redis down)")
OVERSIZED_DROPPED = Counter("notiflow_oversized_dropped", "records over the producer's message "
                            "size, logged and not produced", ["topic"])
BREAKER_STATE = Gauge("notiflow_breaker_state", "circuit breaker: 0 closed, 1 half-open, 2 open",
                      ["provider"])

_started = False


def serve(port: int) -> None:
    """Start the /metrics endpoint once per process (every worker thread calls this)."""
    global _started
    if port and not _started:
        start_http_server(port, addr="127.0.0.1")
        _started = True
        log.info("metrics on http://127.0.0.1:%d/metrics", port)

# --- the flows' input: how far behind the broker each source partition is ----------------
QUEUE_LAG = Gauge("notiflow_queue_lag", "records not yet read (high watermark - next offset)",
                  ["topic", "partition"])

# --- the HTTP gateway (gateway/), served on its own /metrics route ------------------------
GATEWAY_ACCEPTED = Counter("notiflow_gateway_accepted", "notifications answered 202",
                           ["lane", "via"])
GATEWAY_REJECTED = Counter("notiflow_gateway_rejected", "requests refused, by status and error",
                           ["status", "error"])
GATEWAY_SPOOLED = Counter("notiflow_gateway_spooled", "records written to the disk spool")
GATEWAY_REPLAYED = Counter("notiflow_gateway_replayed", "spooled records delivered to Kafka")
GATEWAY_SPOOL_PENDING = Gauge("notiflow_gateway_spool_pending", "records in the spool, not in Kafka")
GATEWAY_KAFKA_UP = Gauge("notiflow_gateway_kafka_up", "1 while the gateway produces to Kafka directly")
