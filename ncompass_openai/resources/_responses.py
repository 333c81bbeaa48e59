"""openai's Responses resource with ``model`` made optional, as for chat completions.

``create``, ``parse`` and ``stream`` of ``client.responses`` take a missing ``model`` as the client's
model (``client.resolve_model()``); everything else is openai's own code. The async ``stream`` resolves
the model when its ``async with`` block opens, since openai's helper needs it before any request.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import TYPE_CHECKING, Any, cast

from openai.resources.responses import AsyncResponses as _AsyncResponses
from openai.resources.responses import Responses as _Responses

from ._completions import _async_model, _sync_model

if TYPE_CHECKING:
    from openai.lib.streaming.responses import AsyncResponseStream, ResponseStreamManager
    from openai.types.responses import ParsedResponse

__all__ = ["AsyncResponses", "Responses"]


class Responses(_Responses):
    """``client.responses``: openai's, with ``model`` optional."""

    def create(self, *, model: str | None = None, **kwargs: Any) -> Any:  # type: ignore[override]
        """Creates a response; ``model`` defaults to the client's model. Other arguments as openai's."""
        return super().create(model=_sync_model(self, model), **kwargs)

    def parse(self, *, model: str | None = None, **kwargs: Any) -> ParsedResponse[Any]:  # type: ignore[override]
        """openai's ``parse`` (``text_format`` a Pydantic model); ``model`` defaults to the client's."""
        return super().parse(model=_sync_model(self, model), **kwargs)

    def stream(self, *, model: str | None = None, **kwargs: Any) -> ResponseStreamManager[Any]:
        """openai's streaming helper; ``model`` defaults to the client's (not for ``response_id=``)."""
        if "input" in kwargs:
            model = _sync_model(self, model)
        if model is not None:
            kwargs["model"] = model
        return super().stream(**kwargs)


class AsyncResponses(_AsyncResponses):
    """``client.responses``: openai's, with ``model`` optional."""

    async def create(self, *, model: str | None = None, **kwargs: Any) -> Any:  # type: ignore[override]
        """Creates a response; ``model`` defaults to the client's model. Other arguments as openai's."""
        return await super().create(model=await _async_model(self, model), **kwargs)

    async def parse(self, *, model: str | None = None, **kwargs: Any) -> ParsedResponse[Any]:  # type: ignore[override]
        """openai's ``parse`` (``text_format`` a Pydantic model); ``model`` defaults to the client's."""
        return await super().parse(model=await _async_model(self, model), **kwargs)

    def stream(  # type: ignore[override]
        self, *, model: str | None = None, **kwargs: Any
    ) -> AbstractAsyncContextManager[AsyncResponseStream[Any]]:
        """openai's streaming helper; ``model`` defaults to the client's, resolved as the block opens."""
        if model is not None or "input" not in kwargs:
            if model is not None:
                kwargs["model"] = model
            return cast("AbstractAsyncContextManager[AsyncResponseStream[Any]]", super().stream(**kwargs))
        return _ModelResolvingStream(self, kwargs)


class _ModelResolvingStream(AbstractAsyncContextManager["AsyncResponseStream[Any]"]):
    """``async with client.responses.stream(input=...)`` without a model: resolves it, then openai's."""

    def __init__(self, resource: AsyncResponses, kwargs: dict[str, Any]) -> None:
        self._resource = resource
        self._kwargs = kwargs
        self._manager: Any = None

    async def __aenter__(self) -> AsyncResponseStream[Any]:
        model = await _async_model(self._resource, None)
        self._manager = _AsyncResponses.stream(self._resource, model=model, **self._kwargs)
        return cast("AsyncResponseStream[Any]", await self._manager.__aenter__())

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._manager is not None:
            await self._manager.__aexit__(exc_type, exc, tb)
