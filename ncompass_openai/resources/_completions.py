"""openai's completion resources with ``model`` made optional: left out, the client's model is used.

The model comes from ``client.resolve_model()`` (``NCOMPASS_MODEL``, the ``model=`` given to the client,
or the tenant's model from ``GET /v1/models``, fetched once). Everything else is openai's own code.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal, Protocol, cast, overload

from openai import AsyncStream, Stream
from openai.resources.chat import AsyncChat as _AsyncChat
from openai.resources.chat import Chat as _Chat
from openai.resources.chat.completions import AsyncCompletions as _AsyncChatCompletions
from openai.resources.chat.completions import Completions as _ChatCompletions
from openai.resources.completions import AsyncCompletions as _AsyncCompletions
from openai.resources.completions import Completions as _Completions
from openai.types import Completion
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ParsedChatCompletion

if TYPE_CHECKING:
    from collections.abc import Awaitable

    from openai.lib.streaming.chat import AsyncChatCompletionStreamManager, ChatCompletionStreamManager

__all__ = [
    "AsyncChat",
    "AsyncChatCompletions",
    "AsyncCompletions",
    "Chat",
    "ChatCompletions",
    "Completions",
]


class _ResolvesModel(Protocol):
    def resolve_model(self) -> str: ...


class _ResolvesModelAsync(Protocol):
    def resolve_model(self) -> Awaitable[str]: ...


def _sync_model(resource: Any, model: str | None) -> str:
    return model if model else cast(_ResolvesModel, resource._client).resolve_model()


async def _async_model(resource: Any, model: str | None) -> str:
    return model if model else await cast(_ResolvesModelAsync, resource._client).resolve_model()


class Completions(_Completions):
    """``client.completions``: openai's, with ``model`` optional."""

    @overload  # type: ignore[override]
    def create(
        self, *, model: str | None = None, stream: Literal[True], **kwargs: Any
    ) -> Stream[Completion]: ...
    @overload
    def create(
        self, *, model: str | None = None, stream: Literal[False] | None = None, **kwargs: Any
    ) -> Completion: ...
    @overload
    def create(self, *, model: str | None = None, **kwargs: Any) -> Completion | Stream[Completion]: ...
    def create(self, *, model: str | None = None, **kwargs: Any) -> Completion | Stream[Completion]:
        """Creates a completion; ``model`` defaults to the client's model. Other arguments as openai's."""
        return cast(
            "Completion | Stream[Completion]", super().create(model=_sync_model(self, model), **kwargs)
        )


class AsyncCompletions(_AsyncCompletions):
    """``client.completions``: openai's, with ``model`` optional."""

    @overload  # type: ignore[override]
    async def create(
        self, *, model: str | None = None, stream: Literal[True], **kwargs: Any
    ) -> AsyncStream[Completion]: ...
    @overload
    async def create(
        self, *, model: str | None = None, stream: Literal[False] | None = None, **kwargs: Any
    ) -> Completion: ...
    @overload
    async def create(
        self, *, model: str | None = None, **kwargs: Any
    ) -> Completion | AsyncStream[Completion]: ...
    async def create(
        self, *, model: str | None = None, **kwargs: Any
    ) -> Completion | AsyncStream[Completion]:
        """Creates a completion; ``model`` defaults to the client's model. Other arguments as openai's."""
        return cast(
            "Completion | AsyncStream[Completion]",
            await super().create(model=await _async_model(self, model), **kwargs),
        )


class ChatCompletions(_ChatCompletions):
    """``client.chat.completions``: openai's, with ``model`` optional."""

    @overload  # type: ignore[override]
    def create(
        self, *, model: str | None = None, stream: Literal[True], **kwargs: Any
    ) -> Stream[ChatCompletionChunk]: ...
    @overload
    def create(
        self, *, model: str | None = None, stream: Literal[False] | None = None, **kwargs: Any
    ) -> ChatCompletion: ...
    @overload
    def create(
        self, *, model: str | None = None, **kwargs: Any
    ) -> ChatCompletion | Stream[ChatCompletionChunk]: ...
    def create(
        self, *, model: str | None = None, **kwargs: Any
    ) -> ChatCompletion | Stream[ChatCompletionChunk]:
        """Creates a chat completion; ``model`` defaults to the client's model, the rest as openai's."""
        return cast(
            "ChatCompletion | Stream[ChatCompletionChunk]",
            super().create(model=_sync_model(self, model), **kwargs),
        )

    def parse(self, *, model: str | None = None, **kwargs: Any) -> ParsedChatCompletion[Any]:
        """openai's ``parse`` (``response_format`` a Pydantic model); ``model`` defaults to the client's."""
        return super().parse(model=_sync_model(self, model), **kwargs)

    def stream(self, *, model: str | None = None, **kwargs: Any) -> ChatCompletionStreamManager[Any]:
        """openai's streaming helper; ``model`` defaults to the client's."""
        return super().stream(model=_sync_model(self, model), **kwargs)


class AsyncChatCompletions(_AsyncChatCompletions):
    """``client.chat.completions``: openai's, with ``model`` optional."""

    @overload  # type: ignore[override]
    async def create(
        self, *, model: str | None = None, stream: Literal[True], **kwargs: Any
    ) -> AsyncStream[ChatCompletionChunk]: ...
    @overload
    async def create(
        self, *, model: str | None = None, stream: Literal[False] | None = None, **kwargs: Any
    ) -> ChatCompletion: ...
    @overload
    async def create(
        self, *, model: str | None = None, **kwargs: Any
    ) -> ChatCompletion | AsyncStream[ChatCompletionChunk]: ...
    async def create(
        self, *, model: str | None = None, **kwargs: Any
    ) -> ChatCompletion | AsyncStream[ChatCompletionChunk]:
        """Creates a chat completion; ``model`` defaults to the client's model, the rest as openai's."""
        return cast(
            "ChatCompletion | AsyncStream[ChatCompletionChunk]",
            await super().create(model=await _async_model(self, model), **kwargs),
        )

    async def parse(self, *, model: str | None = None, **kwargs: Any) -> ParsedChatCompletion[Any]:
        """openai's ``parse`` (``response_format`` a Pydantic model); ``model`` defaults to the client's."""
        return await super().parse(model=await _async_model(self, model), **kwargs)

    def stream(self, *, model: str | None = None, **kwargs: Any) -> AsyncChatCompletionStreamManager[Any]:
        """openai's streaming helper; ``model`` defaults to the client's (resolved when the stream opens).

        openai's helper sends the request through :meth:`create`, which resolves a missing model.
        """
        return super().stream(model=model, **kwargs)  # type: ignore[arg-type]


class Chat(_Chat):
    """``client.chat``: openai's, whose ``completions`` take ``model`` optionally."""

    @cached_property
    def completions(self) -> ChatCompletions:
        """Chat completions, ``model`` optional."""
        return ChatCompletions(self._client)


class AsyncChat(_AsyncChat):
    """``client.chat``: openai's, whose ``completions`` take ``model`` optionally."""

    @cached_property
    def completions(self) -> AsyncChatCompletions:
        """Chat completions, ``model`` optional."""
        return AsyncChatCompletions(self._client)
