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
    receipts_batch_rows: int = 2000

    metrics_port: int = 0  # Prometheus /metrics of a flow process (0: off)

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

    def redacted(self) -> dict:
        """Settings as a dict with secrets hidden, for logs and ``make run``'s banner."""
        return {k: ("***" if isinstance(v, SecretStr) else v) for k, v in self.model_dump().items()}


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
