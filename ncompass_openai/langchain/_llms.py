"""``NCompassLLM``: LangChain's text-completion model for nCompass (``/v1/completions``).

LangChain's ``BaseOpenAI`` pattern, as ``ChatNCompass`` is its ``BaseChatOpenAI`` one: the same
environment, clients, tracing and lifecycle.
"""

from __future__ import annotations

from typing import Any

from langchain_openai.llms.base import BaseOpenAI
from pydantic import model_validator
from typing_extensions import Self, override

from .._client import AsyncNCompass, NCompass
from ._base import NCompassModel

__all__ = ["NCompassLLM"]


class NCompassLLM(NCompassModel, BaseOpenAI):
    """LangChain text-completion model served by nCompass (``pip install 'ncompass-openai[langchain]'``).

    Reads ``NCOMPASS_API_KEY``, ``NCOMPASS_BASE_URL`` and ``NCOMPASS_MODEL`` (the arguments win); never
    ``OPENAI_*``. Without a model, requests use the key's model. Construction does no network I/O.

    Args:
        api_key: The tenant's key. Default: ``NCOMPASS_API_KEY``.
        base_url: The API's URL. Default: ``NCOMPASS_BASE_URL`` or ``https://api.ncompass.tech/v1``.
        model: The model. Default: ``NCOMPASS_MODEL``, else the key's model.
        timeout: Seconds per request. Default: the client's (``NCOMPASS_TIMEOUT``).
        max_retries: Retries of a failed request. Default: the client's (``NCOMPASS_MAX_RETRIES``, 4).
        **kwargs: The other fields of LangChain's ``OpenAI`` (``max_tokens``, ``temperature``...).
    """

    max_retries: int | None = None  # type: ignore[assignment]  # None: the client's default

    @property
    @override
    def _llm_type(self) -> str:
        return "ncompass"

    @property
    @override
    def _invocation_params(self) -> dict[str, Any]:
        params: dict[str, Any] = super()._invocation_params
        return {"model": self.model_name, **params} if self.model_name else params

    @model_validator(mode="after")
    def validate_environment(self) -> Self:  # replaces BaseOpenAI's, which reads OPENAI_*
        """Builds the ``NCompass`` / ``AsyncNCompass`` clients (no network I/O)."""
        if self.n < 1:
            raise ValueError("n must be at least 1.")
        if self.streaming and (self.n > 1 or self.best_of > 1):
            raise ValueError("Cannot stream results when n > 1 or best_of > 1.")
        sync, async_ = self._new_clients()
        self.client = self.client or sync.completions
        self.async_client = self.async_client or async_.completions
        return self

    @override
    def _ncompass_clients(self) -> tuple[NCompass, AsyncNCompass]:
        return self.client._client, self.async_client._client
