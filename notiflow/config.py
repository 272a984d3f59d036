"""One typed settings object, read from the environment.

Defaults run locally. ``KAFKA_BROKERS``, ``REDIS_URL``, ``CLICKHOUSE_URL`` and the provider
variables switch each part to a real external one; everything else takes ``NOTIFLOW_``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


def _env(name: str) -> AliasChoices:
    """Accept both the bare name (``KAFKA_BROKERS``) and ``NOTIFLOW_KAFKA_BROKERS``."""
    return AliasChoices(name, f"NOTIFLOW_{name}")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NOTIFLOW_", frozen=True, extra="ignore")

    # --- real parts -------------------------------------------------------------------
    kafka_brokers: str = Field("127.0.0.1:9092", validation_alias=_env("KAFKA_BROKERS"))
    redis_url: str = Field("redis://127.0.0.1:6379/0", validation_alias=_env("REDIS_URL"))
    # empty: the loader opens chDB under ``chdb_path``; else a ClickHouse server URL
    clickhouse_url: str = Field("", validation_alias=_env("CLICKHOUSE_URL"))
    chdb_path: str = "var/chdb"
    # the loader's read-only SQL endpoint (``make stats``, bench, analysts)
    stats_url: str = "http://127.0.0.1:8123"
    # the loader refuses to start without it (32+ chars); its clients send it as a Bearer token
    loader_token: SecretStr = SecretStr("")
    # the loader's local raw-SQL socket for analysts (``python -m loader.sql``); "" = none
    loader_socket: str = ""
    receipts_ttl_days: int = 30  # raw notiflow.receipts rows (0: keep forever)
    rollup_ttl_days: int = 400  # per-minute rollups (loader/rollups.py)

    # --- topics -----------------------------------------------------------------------
    partitions: int = 4  # requests, critical, settings, devices share this count
    topic_prefix: str = "notify."

    # --- flow -------------------------------------------------------------------------
    max_request_bytes: int = 16 * 1024
    dedup_ttl_s: int = 24 * 3600
    inbox_max: int = 200  # in-app inbox length kept per user
    inapp_live: Literal["user", "batch"] = "user"  # live channel per user, or one per batch
    sent_marker_ttl_s: int = 48 * 3600
    source_batch: int = 2000
    source_poll_s: float = 0.005
    # where requests begin without a snapshot (sources/fresh_start.py): the source group's
    # committed offsets | now - sent_marker_ttl_s | the beginning (tests, development)
    fresh_start: Literal["committed", "time", "earliest"] = "committed"
    receipts_batch_rows: int = 2000
    # the deliver step (sinks/delivery.py): tasks waiting for a channel's sending thread
    # before the flow waits too, and tasks sent in one round (markers and receipts go out
    # as answers arrive within a round)
    deliver_queue_max: int = 8000
    deliver_round_max: int = 4000
    # crash-loop breaker (operators/crash_loop.py): a record in flight when the flow died
    # this many times in a row is skipped to notify.rejected (0: off)
    crash_loop_limit: int = 3
    crash_loop_blame_window_s: float = 10.0  # a death later than this after it left: not its fault
    # which flow the breaker's Redis keys belong to: one value per lane deployment (its
    # recovery store); empty = the topic prefix.  `make run` and the tests pass the
    # recovery folder, so stacks and tests sharing a Redis never read each other's
    crash_loop_scope: str = ""
    # fault injection for tests only: the lane process exits hard (like a segfault) when a
    # record's value contains this marker; empty (the default) means never
    fault_crash_marker: str = ""

    metrics_port: int = 0  # Prometheus /metrics of a flow process (0: off)
    # `make run`: Bytewax processes of the bulk lane and worker threads per flow process
    # (processes x workers <= partitions: one Kafka partition feeds one worker)
    flow_processes: int = 1
    flow_workers: int = 1
    # `make run` restarts a dead flow lane (after 1 s, 2 s, 4 s ... at most 30 s) until it
    # has died more than this many times in runner_restart_window_s: then it stops the stack
    runner_max_restarts: int = 10
    runner_restart_window_s: float = 300.0

    # --- audiences / fan-out (operators/fanout.py, sinks/pull_feed.py) --------------------
    fanout_chunk: int = 2000  # audience members expanded per partition per tick
    presence_window_s: int = 3600  # hybrid: members seen this recently are pushed now
    presence_publish_every_s: int = 60  # gateway: at most one presence record per user per ...
    pull_max: int = 500  # pull-on-read entries kept per audience (newest)
    pull_ttl_s: int = 7 * 24 * 3600  # ... and for at most this long
    fanout_status_ttl_s: int = 7 * 24 * 3600  # nf:fanout:{id} progress hashes kept this long
    # fan-out / settings-copy writes wait this long for Redis (the lane waits), then the lane dies
    fanout_redis_wait_s: float = 120.0

    # --- quiet hours, send_at, bundling (operators/hold_queue.py, operators/bundler.py) ---
    hold_max_per_partition: int = 1_000_000  # held requests per partition; more: failed receipt
    # bundling window (s) per type, longest dotted prefix wins ("social" covers social.*);
    # only requests with a collapse_key bundle; critical never does
    bundle_windows_s: dict[str, float] = {"social.like": 60}
    bundle_actors: int = 3  # actors named in a bundle ("John, Ann and 8 others")

    # --- retries (notify.retry -> dataflows/retry.py -> notify.dlq) ---------------------
    retry_base_s: float = 1.0  # first backoff step; full jitter
    retry_cap_s: float = 600.0  # longest single wait
    retry_deadline_s: float = 24 * 3600  # keep retrying this long, then DLQ

    # --- providers (the sandbox by default) --------------------------------------------
    apns_url: str = Field("http://127.0.0.1:8600", validation_alias=_env("APNS_URL"))
    apns_topic: str = Field("com.example.app", validation_alias=_env("APNS_TOPIC"))
    apns_auth_token: SecretStr = Field(SecretStr("sandbox-jwt"), validation_alias=_env("APNS_AUTH_TOKEN"))
    fcm_url: str = Field("http://127.0.0.1:8600", validation_alias=_env("FCM_URL"))
    fcm_project: str = Field("notiflow-local", validation_alias=_env("FCM_PROJECT"))
    fcm_access_token: SecretStr = Field(SecretStr("sandbox-oauth"), validation_alias=_env("FCM_ACCESS_TOKEN"))
    push_transport: str = "curl"  # curl (libcurl HTTP/2 multiplexed) | httpx
    push_timeout_s: float = 10.0

    sendgrid_url: str = Field("http://127.0.0.1:8601", validation_alias=_env("SENDGRID_URL"))
    sendgrid_api_key: SecretStr = Field(SecretStr("SG.sandbox"), validation_alias=_env("SENDGRID_API_KEY"))
    email_from: str = Field("notify@example.com", validation_alias=_env("EMAIL_FROM"))

    twilio_url: str = Field("http://127.0.0.1:8601", validation_alias=_env("TWILIO_URL"))
    twilio_account_sid: str = Field("ACsandbox", validation_alias=_env("TWILIO_ACCOUNT_SID"))
    twilio_auth_token: SecretStr = Field(SecretStr("sandbox"), validation_alias=_env("TWILIO_AUTH_TOKEN"))
    sms_from: str = Field("+15550000000", validation_alias=_env("SMS_FROM"))
    # Twilio delivery-status webhook (?nid= is appended); empty: the sandbox's own
    sms_status_callback_url: str = ""

    # failover providers (real: https://email.{region}.amazonaws.com, https://api.mailgun.net
    # or https://api.eu.mailgun.net, https://rest.nexmo.com)
    ses_url: str = Field("http://127.0.0.1:8601", validation_alias=_env("SES_URL"))
    ses_region: str = Field("us-east-1", validation_alias=_env("SES_REGION"))
    ses_access_key_id: str = Field("AKIASANDBOX", validation_alias=_env("SES_ACCESS_KEY_ID"))
    ses_secret_access_key: SecretStr = Field(SecretStr("sandbox"),
                                             validation_alias=_env("SES_SECRET_ACCESS_KEY"))
    mailgun_url: str = Field("http://127.0.0.1:8601", validation_alias=_env("MAILGUN_URL"))
    mailgun_domain: str = Field("mg.example.com", validation_alias=_env("MAILGUN_DOMAIN"))
    mailgun_api_key: SecretStr = Field(SecretStr("key-sandbox"), validation_alias=_env("MAILGUN_API_KEY"))
    vonage_url: str = Field("http://127.0.0.1:8601", validation_alias=_env("VONAGE_URL"))
    vonage_api_key: str = Field("sandbox", validation_alias=_env("VONAGE_API_KEY"))
    vonage_api_secret: SecretStr = Field(SecretStr("sandbox"), validation_alias=_env("VONAGE_API_SECRET"))
    failover_timeout_s: float = 10.0  # httpx timeout of the SES / Mailgun / Vonage sinks
    email_providers: list[str] = ["sendgrid", "ses", "mailgun"]  # failover order
    sms_providers: list[str] = ["twilio", "vonage"]
    breaker_failures: int = 5  # consecutive failing batches that open a provider's breaker
    breaker_open_s: float = 30.0  # then one probe decides
    # critical notifications: the channel order to escalate along, per type ("*": others)
    escalation: dict[str, list[str]] = {"*": ["push", "sms"]}

    # --- provider rate limits (sinks/rate_limit.py: Redis token buckets shared by every
    # process).  Sends/s; 0 = no bucket.  Local defaults only keep the sandbox, tests and
    # bench unthrottled: set the real ones in production (documented limits in comments).
    rate_apns_per_s: float = 100_000  # Apple publishes no per-app cap; 429 TooManyRequests per device
    rate_fcm_per_s: float = 100_000  # real: 600k messages/min per project = 10,000/s
    rate_sendgrid_per_s: float = 100_000  # emails (personalizations)/s; real: plan-bound, no published figure
    rate_ses_per_s: float = 100_000  # real: the account's sending quota (14/s new production, 1/s sandbox)
    rate_mailgun_per_s: float = 100_000  # real: per plan/account (no published figure)
    rate_twilio_per_s: float = 100_000  # real: account cap (up to 2,000 MPS); 100 concurrent requests
    rate_vonage_per_s: float = 100_000  # real: 30 API requests/s per API key by default
    # per SMS sender number (sms_from).  Real US long code / 10DLC: 1 segment/s -> set
    # NOTIFLOW_RATE_SMS_NUMBER_PER_S=1; toll-free ~3/s; short code 100+/s
    rate_sms_number_per_s: float = 1_000
    rate_sms_numbers: dict[str, float] = {}  # per-number overrides: {"+15550001111": 100}
    rate_burst_s: float = 1.0  # a bucket holds this many seconds of its rate
    # share of each bucket bulk sends leave for critical ones (whole tokens; a bucket of
    # 1 token keeps none), so a 2FA code does not queue behind a bulk campaign
    rate_critical_reserve: float = 0.1
    # a sink waits at most this long for tokens per batch; the rest go to notify.retry,
    # due when the bucket will have them (no loss, and the worker keeps snapshotting)
    rate_max_wait_s: float = 30.0

    # --- people's API (gateway/people.py): signed, expiring user tokens -----------------
    # set NOTIFLOW_USER_TOKEN_SECRET in production: anyone with it can act as any user
    user_token_secret: SecretStr = SecretStr("notiflow-local-user-token-secret")
    # local development only: lets the gateway start with the built-in (public) user-token
    # secret or one under 32 bytes; never set it where real users are
    dev_mode: bool = False
    user_token_ttl_s: int = 3600  # default lifetime of a token from `make user-token`
    people_max_body_bytes: int = 16 * 1024  # settings / device bodies
    # writes (settings PUT, device POST/DELETE, inbox read marks) per user: a token bucket
    people_writes_per_s: float = 5.0
    people_writes_burst: int = 20
    # active devices a user keeps in the flows; a new one over it replaces the oldest
    max_devices_per_user: int = 20
    inbox_page_max: int = 100  # largest ?limit= of GET /v1/users/{id}/inbox
    sse_heartbeat_s: float = 15.0  # comment line on idle live streams (keeps proxies open)

    # --- HTTP gateway (gateway/) ---------------------------------------------------------
    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8080
    gateway_spool_dir: str = "var/spool"  # fsynced spool while Kafka is unreachable
    gateway_spool_segment_bytes: int = 64 * 1024 * 1024
    gateway_kafka_timeout_ms: int = 5000  # a produce not acked by then is spooled instead
    gateway_max_batch: int = 1000  # requests per POST /v1/notifications/batch
    gateway_max_batch_bytes: int = 8 * 1024 * 1024
    gateway_idempotency_ttl_s: int = 24 * 3600  # Idempotency-Key -> id kept this long
    gateway_key_cache_s: float = 5.0  # API key look-ups cached (a revoke takes this long)
    gateway_default_rate: float = 100.0  # notifications (recipients)/s per API key unless it says
    gateway_default_burst: int = 1000  # and at most this many at once (a full batch fits)
    gateway_redis_connections: int = 256  # per gateway process; more requests wait for one
    # open live (SSE) streams per gateway process; each holds a pub/sub connection in user
    # live mode, from a pool of its own so streams never starve the other routes
    gateway_live_max_streams: int = 10_000
    gateway_live_max_per_user: int = 5  # open live streams per user (their token) per process
    gateway_live_max_per_key: int = 100  # ... per API key (admin reads) per process
    # rate tokens an audience request costs its key (single requests cost one per recipient)
    gateway_audience_cost: int = 1000
    gateway_log_requests: bool = True  # one JSON log line per accepted notification

    def redacted(self) -> dict:
        """Settings as a dict with secrets hidden, for logs and ``make run``'s banner."""
        return {k: ("***" if isinstance(v, SecretStr) else v) for k, v in self.model_dump().items()}


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
