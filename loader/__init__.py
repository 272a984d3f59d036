"""The receipts loader: one process that owns the ClickHouse store (chDB locally).

chDB lets one process own a data folder, and many flow processes produce receipts, so
receipts travel on ``notify.receipts`` and this one loader batches them into
``notiflow.receipts`` and serves read-only SQL over HTTP to ``make stats``, the dashboard
and analysts. Against a ClickHouse server (``CLICKHOUSE_URL``) the same code runs unchanged.
"""
