"""Configuration from ``PUSHPOOL_*`` environment variables (pydantic-settings)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PUSHPOOL_", extra="ignore")

    home: Path = Field(default=Path("~/.pushpool"), description="Where the embedded store lives")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default sqlite+aiosqlite:///$HOME/pushpool.db")
    api_url: str = Field(default="http://127.0.0.1:4300", description="Where the CLI finds the API")
    host: str = "127.0.0.1"
    port: int = 4300
    api_token: SecretStr | None = Field(default=None, description="Bearer token for every route")
    events_secret: SecretStr | None = Field(
        default=None, description="Shared secret that provider event pushes must send")
    secret_key: SecretStr | None = Field(
        default=None, description="Encrypts stored secrets (else a key file in home)")
    previous_secret_keys: list[SecretStr] = Field(
        default_factory=list, description="Older secret keys, as a JSON list: still read, "
                                          "so `pushpool secrets rotate-key` can reseal")

    # Engine
    claim_batch_size: int = Field(default=200, ge=1)
    lease_seconds: float = Field(default=60.0, gt=0, description="How long a claim holds a run")
    replica_id: str | None = Field(
        default=None, min_length=1, max_length=100, pattern=r"^[A-Za-z0-9._:-]+$",
        description="This server's replica id, kept across restarts (default: one kept in "
                    "PUSHPOOL_HOME); unique among live replicas")
    # 4 s, not 10: a dead replica's runs are resubmitted within 5 s. Taking a slow replica
    # for dead costs only a repeated submit of the same attempt, which adapters adopt.
    heartbeat_timeout_seconds: float = Field(
        default=4.0, gt=0, description="A replica silent this long is taken for dead and "
                                       "its claimed runs are resubmitted by the others")
    dispatch_enabled: bool = Field(
        default=True, description="Claim and submit runs on this server; false makes an "
                                  "API-only replica whose runs the others submit")
    submit_concurrency: int = Field(default=64, ge=1)
    claim_ahead_seconds: float = Field(
        default=2.0, ge=0, description="Claim runs this long before they are due, so the "
                                       "provider is called at their scheduled time")
    submit_timeout_seconds: float = Field(default=30.0, gt=0,
                                          description="One provider submit call's time limit")
    submit_max_attempts: int = Field(default=8, ge=1)
    submit_deadline_seconds: float = Field(
        default=3600.0, gt=0, description="Give up submitting a run after this (runs of a "
                                          "deployment use its own submit_deadline_seconds)")
    submit_backoff_base_seconds: float = Field(
        default=0.5, gt=0, description="First retry waits up to this; doubles each retry")
    submit_backoff_cap_seconds: float = Field(default=30.0, gt=0,
                                              description="Longest wait between retries")
    breaker_failure_threshold: int = Field(
        default=10, ge=1, description="Submit failures in a row (any runs) that pause a pool")
    breaker_window_seconds: float = Field(
        default=60.0, gt=0, description="...counted only within this many seconds")
    breaker_cooldown_seconds: float = Field(
        default=30.0, gt=0, description="Wait between probes of a breaker-paused pool")
    watch_interval_seconds: float = Field(default=1.0, gt=0,
                                          description="Status poll for non-process pools")
    watch_batch_size: int = Field(default=500, ge=1,
                                  description="Active runs followed per watcher pass")
    scheduler_interval_seconds: float = Field(default=30.0, gt=0)
    scheduler_min_runs: int = Field(default=3, ge=1)
    scheduler_max_runs: int = Field(default=100, ge=1)
    scheduler_horizon_seconds: float = Field(default=3600.0, gt=0)
    cancel_grace_seconds: float = Field(default=10.0, ge=0)
    # Serverless ticks (engine/tick.py)
    tick_max_seconds: float = Field(
        default=50.0, gt=0, description="Longest tick where the platform tells no remaining "
                                        "time (Google, Azure, cron); under the timer period")
    tick_allow_sqlite: bool = Field(
        default=False, description="Let ticks run on SQLite (tests, one VM): functions share "
                                   "no file, so the serverless store is PostgreSQL")
    tick_idle_probe: bool = Field(
        default=True, description="A cloud function's tick first asks PostgreSQL in one "
                                  "read whether anything is due, and stops there if not")
    log_level: str = "INFO"
    extra_providers: dict[str, str] = Field(
        default_factory=dict,
        description='More pool types, as JSON {"type": "dotted.module"} (e.g. a benchmark no-op)')

    def resolved_home(self) -> Path:
        return self.home.expanduser()

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{self.resolved_home() / 'pushpool.db'}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
