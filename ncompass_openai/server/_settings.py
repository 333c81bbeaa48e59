"""The local server's settings: command-line flags beat ``NCOMPASS_SERVER_*`` environment variables."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

__all__ = ["UPSTREAM_FEATURES", "ServerSettings", "default_db_path"]

UPSTREAM_FEATURES = frozenset({"logprobs", "min_tokens", "response_format", "responses", "tools", "vllm"})
"""What ``--upstream-supports`` may declare: ``logprobs`` (the upstream's, passed on), ``tools`` (the
upstream's tool calls, checked against the request's tools, then passed on), ``response_format``
(forwarded, and every answer checked against it here), ``responses`` (``/v1/responses`` forwarded to
the upstream's), ``min_tokens`` (forwarded as sent: llama-cpp-python's server honours it too), ``vllm``
(the vLLM fields ``top_k``, ``min_p``, ``repetition_penalty``, ``min_tokens`` and the chat template
fields, forwarded as sent; ``n`` and list prompts sent whole)."""


def default_db_path() -> str:
    """Where the ledger lives when ``--db`` is not given: the user's data directory."""
    import platformdirs

    directory = Path(platformdirs.user_data_dir("ncompass-openai", appauthor=False))
    return str(directory / "server.sqlite3")


class ServerSettings(BaseSettings):
    """Settings of the local nCompass server; each field's description is its ``ncompass serve`` flag's help.

    Every field can also be set with an environment variable named ``NCOMPASS_SERVER_<FIELD>``
    (``NCOMPASS_SERVER_API_KEYS`` takes a JSON list or a comma separated list); values given in code
    or on the command line win. ``ncompass serve`` makes one flag of each field (``--api-key``,
    repeatable, for ``api_keys``), so a setting and its flag cannot drift.
    """

    model_config = SettingsConfigDict(env_prefix="NCOMPASS_SERVER_", extra="ignore")

    host: str = Field(default="127.0.0.1", description="Interface to listen on.")
    port: int = Field(default=8000, ge=0, le=65535, description="TCP port; 0 picks a free one and prints it.")
    engine: Literal["llama", "synthetic", "openai"] = Field(
        default="llama",
        description="llama (the real SmolLM2 model), synthetic (fast deterministic tokens), or openai "
        "(forward to OpenAI-compatible servers given with --upstream).",
    )
    model: str | None = Field(
        default=None, description="A GGUF file for the llama engine (default: the bundled SmolLM2-135M)."
    )
    api_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        repr=False,
        description="A tenant key (repeatable: one tenant per key). None: the keys in the ledger, else a new "
        "one, printed once. A key on the command line is visible to other users of the machine: prefer "
        "NCOMPASS_SERVER_API_KEYS.",
    )
    upstream: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="The openai engine: an upstream OpenAI-compatible server's base URL, e.g. "
        "http://10.0.0.5:8000/v1 (repeatable: replicas of one model).",
    )
    upstream_model: str | None = Field(
        default=None, description="The model to ask the upstream for (default: the first it lists)."
    )
    upstream_api_key: str | None = Field(
        default=None,
        repr=False,
        description="The key the openai engine sends upstream. On the command line it is visible to other "
        "users of the machine: prefer NCOMPASS_SERVER_UPSTREAM_API_KEY.",
    )
    served_model_name: str | None = Field(
        default=None, description="The model name tenants see (default: the upstream's)."
    )
    upstream_supports: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="A feature the upstream enforces, forwarded instead of refused (repeatable, or comma "
        "separated): " + ", ".join(sorted(UPSTREAM_FEATURES)) + ".",
    )
    upstream_timeout: float = Field(
        default=60.0,
        gt=0,
        description="Seconds the openai engine waits for each event of a streamed answer (comments do not "
        "count).",
    )
    upstream_answer_timeout: float = Field(
        default=600.0,
        gt=0,
        description="Seconds the openai engine waits for a whole answer that is not streamed (a request "
        "that is not streamed is forwarded as one).",
    )
    start_command: str | None = Field(
        default=None,
        description="The openai engine: a shell command that brings the upstreams up (run by a deployment "
        "start; gets NCOMPASS_MODEL and NCOMPASS_TENANT). Needs --stop-command too.",
    )
    stop_command: str | None = Field(
        default=None,
        description="The openai engine: a shell command that brings the upstreams down (run when no "
        "deployment runs any more: a stop, an idle shutdown).",
    )
    start_timeout: float = Field(
        default=600.0,
        gt=0,
        description="The openai engine: seconds a start (its command, then a healthy replica) may take "
        "before the deployment is failed; a stop command gets as long.",
    )
    health_interval: float = Field(
        default=5.0, gt=0, description="Seconds between two health checks of each upstream replica."
    )
    db: str | None = Field(
        default=None, description="SQLite ledger file, or :memory: (default: in the user's data directory)."
    )
    idle_shutdown: float = Field(
        default=7200.0, gt=0, description="Seconds without inference after which a running model is stopped."
    )
    cold_start: float = Field(
        default=0.0, ge=0, description="Extra seconds added to every model start, like a hosted cold start."
    )
    threads: int | None = Field(
        default=None, ge=1, description="CPU threads of the engine (default: its choice)."
    )
    max_batch: int = Field(
        default=8, ge=1, le=256, description="Sequences the engine decodes together (its batch slots)."
    )
    synthetic_token_rate: float | None = Field(
        default=None,
        gt=0,
        description="Tokens per second each sequence of the synthetic engine streams (default: as fast as "
        "it can), to stand in for a real deployment's pace.",
    )
    autostart: bool = Field(default=True, description="Start every tenant's model at boot.")
    max_queue_per_key: int = Field(
        default=8, ge=1, description="Requests one key may have queued or running; one more answers 429."
    )
    max_body_bytes: int = Field(
        default=4 * 1024 * 1024, ge=1024, description="Largest request body; a larger one answers 413."
    )
    implicit_idle_timeout: float = Field(
        default=300.0,
        gt=0,
        description="Idle lease, seconds, of the session opened by inference outside a session.",
    )
    sweep_interval: float = Field(
        default=1.0,
        gt=0,
        description="Seconds between two passes of the sweeper (leases, idle models, bookings).",
    )
    metrics: bool = Field(
        default=False,
        description="Serve Prometheus metrics at GET /metrics, without a key (tenants appear as hashes).",
    )
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        default="info", description="uvicorn's log level (no key and no prompt text is logged at info)."
    )

    @field_validator("api_keys", "upstream", "upstream_supports", mode="before")
    @classmethod
    def _split_lists(cls, value: object) -> object:
        # A comma separated string is the natural way to give several values in one variable.
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

    @field_validator("upstream")
    @classmethod
    def _check_upstreams(cls, value: list[str]) -> list[str]:
        for url in value:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"an upstream is an http:// or https:// base URL, not {url!r}")
        return [url.rstrip("/") for url in value]

    @field_validator("upstream_supports")
    @classmethod
    def _check_features(cls, value: list[str]) -> list[str]:
        # Repeated flags and comma-separated lists alike: `--upstream-supports tools,logprobs`.
        value = [part.strip() for item in value for part in item.split(",") if part.strip()]
        unknown = sorted(set(value) - UPSTREAM_FEATURES)
        if unknown:
            known = ", ".join(sorted(UPSTREAM_FEATURES))
            raise ValueError(f"unknown feature {unknown[0]!r}: the features are {known}")
        return value

    @model_validator(mode="after")
    def _check_engine(self) -> ServerSettings:
        if self.engine == "openai" and not self.upstream:
            raise ValueError("the openai engine needs at least one --upstream URL")
        if self.engine != "openai" and self.upstream:
            raise ValueError("--upstream is for the openai engine: add --engine openai")
        if bool(self.start_command) != bool(self.stop_command):
            raise ValueError("--start-command and --stop-command go together: give both, or neither")
        return self

    def db_path(self) -> str:
        """The database to open: ``db`` itself, or the default file in the user's data directory."""
        return self.db if self.db is not None else default_db_path()
