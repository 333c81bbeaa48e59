"""``ChatNCompass``: LangChain's chat model for nCompass, a ``BaseChatOpenAI`` over ``NCompass`` clients.

Shaped like LangChain's partner packages (``langchain-xai``'s ``ChatXAI``, ``langchain-deepseek``'s
``ChatDeepSeek``): the provider's own environment, a ``SecretStr`` key listed in ``lc_secrets``, the
provider named to tracing, serialisable under the package's namespace. Its clients are ``NCompass`` and
``AsyncNCompass``, so retries of ``503 model_starting``, idempotency keys and the billing guard apply to
every LangChain call.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import tiktoken
from langchain_openai.chat_models.base import BaseChatOpenAI
from pydantic import model_validator
from typing_extensions import Self, override

from .._client import AsyncNCompass, NCompass
from ._base import NCompassModel

if TYPE_CHECKING:
    from langchain_core.language_models.base import LanguageModelInput

__all__ = ["ChatNCompass"]


class ChatNCompass(NCompassModel, BaseChatOpenAI):
    """LangChain chat model served by nCompass (``pip install 'ncompass-openai[langchain]'``).

    Reads ``NCOMPASS_API_KEY``, ``NCOMPASS_BASE_URL`` and ``NCOMPASS_MODEL`` (the arguments win); never
    ``OPENAI_*``. Without a model, requests use the key's model (looked up once, on the first request).
    Construction does no network I/O. Token usage is reported on streamed answers too.

    Example:
        ```python
        from ncompass_openai.langchain import ChatNCompass

        chat = ChatNCompass(max_tokens=200)
        with chat.session(idle_timeout=300):  # billed until the block ends, however it ends
            print(chat.invoke("What is quantization?").content)
        ```

    Args:
        api_key: The tenant's key. Default: ``NCOMPASS_API_KEY``.
        base_url: The API's URL. Default: ``NCOMPASS_BASE_URL`` or ``https://api.ncompass.tech/v1``.
        model: The model. Default: ``NCOMPASS_MODEL``, else the key's model.
        timeout: Seconds per request. Default: the client's (``NCOMPASS_TIMEOUT``, reads bounded by
            ``NCOMPASS_READ_TIMEOUT``).
        max_retries: Retries of a failed request, ``503 model_starting`` included. Default: the
            client's (``NCOMPASS_MAX_RETRIES``, 4).
        http_client / http_async_client: httpx clients for the sync / async requests (``httpx2`` on
            openai 3.x).
        **kwargs: The other fields of LangChain's ``ChatOpenAI`` (``temperature``, ``max_tokens``,
            ``stop``, ``seed``, ``logprobs``, ``model_kwargs``, ``stream_usage``...).
    """

    @property
    @override
    def _llm_type(self) -> str:
        return "ncompass-chat"

    @model_validator(mode="after")
    def validate_environment(self) -> Self:  # replaces BaseChatOpenAI's, which reads OPENAI_*
        """Builds the ``NCompass`` / ``AsyncNCompass`` clients (no network I/O)."""
        if self.n is not None and self.n < 1:
            raise ValueError("n must be at least 1.")
        if self.n is not None and self.n > 1 and self.streaming:
            raise ValueError("n must be 1 when streaming.")
        sync, async_ = self._new_clients(http_socket_options=self.http_socket_options)
        if not self.client:
            self.root_client, self.client = sync, sync.chat.completions
        if not self.async_client:
            self.root_async_client, self.async_client = async_, async_.chat.completions
        if self.stream_usage is not False:
            self.stream_usage = True
        return self

    @override
    def _ncompass_clients(self) -> tuple[NCompass, AsyncNCompass]:
        return self.root_client, self.root_async_client

    @override
    def _get_request_payload(
        self, input_: LanguageModelInput, *, stop: list[str] | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        payload: dict[str, Any] = super()._get_request_payload(input_, stop=stop, **kwargs)
        if payload.get("model") is None:
            payload.pop("model", None)  # the client fills in the key's model
        return payload

    @override
    def _get_encoding_model(self) -> tuple[str, tiktoken.Encoding]:
        if self.tiktoken_model_name is None and self.model_name is None:
            # An estimate, as for any model name tiktoken does not know.
            return "cl100k_base", tiktoken.get_encoding("cl100k_base")
        model_and_encoding: tuple[str, tiktoken.Encoding] = super()._get_encoding_model()
        return model_and_encoding
