"""Client settings: arguments given in code beat ``NCOMPASS_*`` environment variables."""

from __future__ import annotations

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["DEFAULT_BASE_URL", "NCompassSettings"]

DEFAULT_BASE_URL = "https://api.ncompass.tech/v1"
"""The hosted nCompass API: the clients' base URL unless ``NCOMPASS_BASE_URL`` or ``base_url=`` names one."""


class NCompassSettings(BaseSettings):
    """Every ``NCOMPASS_*`` variable the client reads.

    Only ``NCOMPASS_*`` variables are read: ``OPENAI_*`` variables never configure an nCompass client.
    """

    model_config = SettingsConfigDict(env_prefix="NCOMPASS_", extra="ignore", populate_by_name=True)

    api_key: SecretStr | None = None
    """The tenant's API key (`NCOMPASS_API_KEY`)."""
    base_url: str = DEFAULT_BASE_URL
    """Where the nCompass API answers (`NCOMPASS_BASE_URL`)."""
    model: str | None = None
    """The model to use when a request names none (`NCOMPASS_MODEL`); else the tenant's model."""
    timeout: float = Field(default=600.0, gt=0)
    """Total timeout of a request, seconds (`NCOMPASS_TIMEOUT`)."""
    read_timeout: float = Field(default=60.0, gt=0)
    """Longest silence allowed between two reads, streams included, seconds (`NCOMPASS_READ_TIMEOUT`)."""
    max_retries: int = Field(default=4, ge=0)
    """Retries of a failed request, `503 model_starting` included (`NCOMPASS_MAX_RETRIES`)."""
    idle_timeout: float | None = Field(default=900.0, gt=0)
    """Idle timeout a new session asks for, seconds (`NCOMPASS_IDLE_TIMEOUT`)."""
    stop_on_sigterm: bool = True
    """Whether the billing guard stops sessions on `SIGTERM` (`NCOMPASS_STOP_ON_SIGTERM`; `0`: off)."""
