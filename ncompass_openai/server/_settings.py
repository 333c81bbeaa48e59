"""The local server's settings: command-line flags beat ``NCOMPASS_SERVER_*`` environment variables."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["ServerSettings", "default_db_path"]


def default_db_path() -> str:
    """Where the ledger lives when ``--db`` is not given: the user's data directory."""
    import platformdirs

    directory = Path(platformdirs.user_data_dir("ncompass-openai", appauthor=False))
    return str(directory / "server.sqlite3")


class ServerSettings(BaseSettings):
    """Settings of the local nCompass server.

    Every field can also be set with an environment variable named ``NCOMPASS_SERVER_<FIELD>``
    (``NCOMPASS_SERVER_API_KEYS`` takes a JSON list or a comma separated list); values given in code
    or on the command line win.

    Attributes:
        host: Interface to listen on.
        port: TCP port; 0 picks a free one.
        engine: ``"llama"`` (the real model) or ``"synthetic"`` (fast deterministic tokens).
        model: Path of a GGUF file for the llama engine; ``None`` serves the bundled SmolLM2.
        api_keys: One tenant per key. Empty: keys already in the database, or a new generated one.
        db: SQLite file of the ledger, or ``":memory:"``; ``None`` means the user's data directory.
        idle_shutdown: Seconds without inference after which a running model is stopped.
        cold_start: Extra seconds added to every model start, to behave like a hosted cold start.
        threads: CPU threads of the engine; ``None`` lets the engine choose.
        autostart: Start every tenant's deployment at boot.
        max_queue_per_key: Requests a key may have waiting or running before it gets 429.
        max_body_bytes: Largest request body accepted (413 above it).
        sweep_interval: Seconds between two passes of the background sweeper (leases, idle, bookings).
        log_level: uvicorn's log level.
    """

    model_config = SettingsConfigDict(env_prefix="NCOMPASS_SERVER_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    engine: Literal["llama", "synthetic"] = "llama"
    model: str | None = None
    api_keys: Annotated[list[str], NoDecode] = Field(default_factory=list, repr=False)
    db: str | None = None
    idle_shutdown: float = Field(default=7200.0, gt=0)
    cold_start: float = Field(default=0.0, ge=0)
    threads: int | None = Field(default=None, ge=1)
    autostart: bool = True
    max_queue_per_key: int = Field(default=8, ge=1)
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    sweep_interval: float = Field(default=1.0, gt=0)
    log_level: str = "info"

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        # A comma separated string is the natural way to give several keys in one variable.
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return value

    @field_validator("api_keys")
    @classmethod
    def _check_keys(cls, value: list[str]) -> list[str]:
        for key in value:
            if not key or any(ch.isspace() for ch in key):
                raise ValueError("an API key must be a non-empty string without spaces")
        return value

    def db_path(self) -> str:
        """The database to open: ``db`` itself, or the default file in the user's data directory."""
        return self.db if self.db is not None else default_db_path()
