"""Service configuration: one class, every field bounded, read from `DUET_*` variables.

Validated once at startup so a typo or an absurd value stops the process before it serves.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Self
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_ADMIN_TOKENS = frozenset({"change-me", "changeme", "admin", "secret", "token"})


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DUET_", extra="ignore", frozen=True)

    bundle: Path | None = Field(default=None, description="Bundle directory to serve.")
    admin_bundle_root: Path | None = Field(
        default=None,
        description="Admin reloads may only name bundles under this directory; unset = anywhere.",
    )
    redis_url: str | None = Field(
        default=None,
        description="redis://host:port/db (cluster: one startup node); unset = in-process store.",
    )
    redis_mode: Literal["single", "cluster", "sentinel"] = Field(
        default="single", description="single node, Redis Cluster, or a Sentinel-managed primary."
    )
    redis_sentinels: str | None = Field(
        default=None,
        max_length=4_096,
        pattern=r"^\s*[^\s,:]+:\d{1,5}\s*(,\s*[^\s,:]+:\d{1,5}\s*)*$",
        description="Sentinel mode: host:port of each sentinel, comma-separated.",
    )
    redis_master_name: str | None = Field(
        default=None, min_length=1, max_length=256, description="Sentinel mode: the master's name."
    )
    experiment_shards: int = Field(
        default=16,
        ge=1,
        le=1_024,
        description="Exposure streams and experiment counters are split over this many keys "
        "(hash-tagged, so a cluster spreads them). Change it only between experiments.",
    )
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    worker_healthcheck_seconds: float = Field(
        default=30.0,
        ge=0.05,
        le=3_600,
        description="uvicorn's supervisor restarts a worker that does not answer its ping in this.",
    )
    worker_state_dir: Path | None = Field(
        default=None,
        description="Set by `python -m service` with several workers: their readiness marks.",
    )
    exact_scan_max_rows: int = Field(
        default=20_000,
        ge=0,
        le=10_000_000,
        description="A filter leaving at most this many rows is scored exactly, not by the index.",
    )
    log_level: str = Field(default="info", pattern="^(critical|error|warning|info|debug)$")

    redis_timeout_ms: int = Field(default=50, ge=1, le=5_000)
    redis_max_connections: int = Field(default=64, ge=1, le=10_000)
    breaker_failures: int = Field(default=5, ge=1, le=1_000)
    breaker_cooldown_seconds: float = Field(default=2.0, gt=0, le=600)
    cache_ttl_seconds: int = Field(default=3_600, ge=1, le=30 * 86_400)
    history_length: int = Field(default=200, ge=1, le=10_000)
    history_ttl_seconds: int = Field(default=90 * 86_400, ge=60, le=3_650 * 86_400)
    seen_max_items: int = Field(
        default=10_000,
        ge=1,
        le=1_000_000,
        description="Seen set per user (never recommended again); oldest dropped past it. "
        "Same TTL as the history.",
    )
    rating_threshold: float = Field(
        default=3.5, ge=0.5, le=5.0, description="A rating below it is a negative event."
    )
    local_cache_size: int = Field(
        default=10_000, ge=0, le=10_000_000, description="Users (history + embeddings) in-process."
    )
    page_memo_size: int = Field(
        default=4_096,
        ge=0,
        le=10_000_000,
        description="Plain pages per arm reused while their inputs are unchanged; 0 = off.",
    )

    max_body_bytes: int = Field(default=1_048_576, ge=1_024, le=64 * 1_048_576)
    overfetch_factor: float = Field(default=2.0, ge=1.0, le=100.0)
    max_inflight: int = Field(
        default=64, ge=1, le=100_000, description="Requests under /v1/ in flight per worker."
    )
    max_queue_ms: int = Field(
        default=0,
        ge=0,
        le=60_000,
        description="Shed /v1/ while the event loop stays this late; 0 = off (in-flight only).",
    )
    request_concurrency: int = Field(
        default=8, ge=1, le=1_024, description="Recommends past the store round trip at once."
    )

    docs_enabled: bool = True
    dev_mode: bool = False
    admin_token: SecretStr | None = None
    experiments: Path | None = Field(default=None, description="Experiment config (TOML).")
    attribution_window_seconds: float = Field(default=1_800.0, gt=0, le=7 * 86_400)
    exposure_stream_maxlen: int = Field(default=100_000, ge=100, le=100_000_000)

    @property
    def uses_redis(self) -> bool:
        return self.redis_url is not None or self.redis_mode == "sentinel"

    @model_validator(mode="after")
    def _redis_mode_complete(self) -> Self:
        if self.redis_mode == "sentinel":
            if self.redis_sentinels is None or self.redis_master_name is None:
                raise ValueError(
                    "DUET_REDIS_MODE=sentinel needs DUET_REDIS_SENTINELS and DUET_REDIS_MASTER_NAME"
                )
        elif self.redis_sentinels is not None:
            raise ValueError(
                f"DUET_REDIS_SENTINELS is set but DUET_REDIS_MODE={self.redis_mode}; "
                "set DUET_REDIS_MODE=sentinel"
            )
        if self.redis_mode == "cluster":
            if self.redis_url is None:
                raise ValueError("DUET_REDIS_MODE=cluster needs DUET_REDIS_URL (a startup node)")
            if urlsplit(self.redis_url).path.strip("/") not in ("", "0"):
                raise ValueError("DUET_REDIS_URL: Redis Cluster has only db 0")
        return self

    @model_validator(mode="after")
    def _refuse_placeholder_token(self) -> Self:
        token = self.admin_token.get_secret_value() if self.admin_token is not None else None
        weak = token is not None and (token.lower() in PLACEHOLDER_ADMIN_TOKENS or len(token) < 16)
        if weak and not self.dev_mode:
            raise ValueError(
                "DUET_ADMIN_TOKEN is a placeholder or shorter than 16 characters; "
                "set a real secret or DUET_DEV_MODE=true"
            )
        return self
