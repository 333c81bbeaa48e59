"""The 0.0.x methods of :class:`AsyncNCompass`: the twin of ``_legacy_sync.py``."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import AsyncIterable, Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, cast, overload

import anyio
import openai

from ._legacy import (
    CHAT_BATCH_CONCURRENCY,
    FIRST_POLL,
    UNREACHABLE,
    Planned,
    Sampling,
    chat_texts,
    completion_texts,
    plan_chat,
    plan_completion,
    print_pieces,
)
from ._legacy_defaults import DEFAULT_MAX_TOKENS, DEFAULT_TEMPERATURE, DEFAULT_TOP_P
from ._streaming import AsyncTextStream, open_async_text_stream

if TYPE_CHECKING:
    from ._client import AsyncNCompass
    from .types import Session

__all__ = ["AsyncLegacyMixin"]


class AsyncLegacyMixin:
    """0.0.x methods of :class:`ncompass_openai.AsyncNCompass` (awaitables and async iterators)."""

    def _nc(self) -> AsyncNCompass:
        return cast("AsyncNCompass", self)

    async def start_session(self, *, timeout: float = 20.0, start_model: bool = False) -> Session:
        """Starts a time-billed session, then waits until the model is running (as 0.0.x did).

        The deployment is looked at first: a model that is stopped (and that no booking starts within
        ``timeout``) raises :class:`ModelNotRunningError` at once, before any session opens, so nothing
        is billed for a model that cannot answer.

        Args:
            timeout: seconds to wait for the model. If it is not running by then, the session just
                started is stopped again (no billing while nothing can answer) and
                [`DeploymentTimeoutError`][ncompass_openai._exceptions.DeploymentTimeoutError]
                says how to start the model.
            start_model: start a stopped (or failed) model first, then wait for it within ``timeout``.
        """
        client = self._nc()
        await client.deployment._before_session(timeout, start_model)
        session = await client.sessions.start()
        try:
            await self.wait_until_model_running(timeout=timeout)
        except BaseException:
            if session.status == "active":
                with anyio.CancelScope(shield=True):
                    # On failure the server's idle lease stops it; the wait error is the one to report.
                    with contextlib.suppress(openai.OpenAIError):
                        await client.sessions.stop(session.id)
            raise
        return session

    async def stop_session(self) -> bool:
        """Stops the active session; returns True (billing stops now)."""
        await self._nc().sessions.stop()
        return True

    async def model_is_running(self) -> bool:
        """True when the model can answer now; False when it cannot, or the server cannot be reached."""
        try:
            return bool(await self._nc().deployment.is_running())
        except UNREACHABLE:
            return False

    async def wait_until_model_running(self, timeout: float = 20.0) -> None:
        """Waits until the model is running, polling with backoff and the server's ready estimate.

        Args:
            timeout: seconds to wait; then
                [`DeploymentTimeoutError`][ncompass_openai._exceptions.DeploymentTimeoutError]
                tells how to start the model (``ncompass model start`` / ``nccli-start-model``) and check it.
        """
        await self._nc().deployment._wait(timeout, FIRST_POLL, None, tolerate=UNREACHABLE)

    @overload
    async def complete_prompt(
        self,
        prompt: str,
        max_tokens: int | None = ...,
        temperature: float | None = ...,
        top_p: float | None = ...,
        stream: Literal[True] = ...,
        **params: Any,
    ) -> AsyncTextStream: ...
    @overload
    async def complete_prompt(
        self,
        prompt: str | Sequence[str],
        max_tokens: int | None = ...,
        temperature: float | None = ...,
        top_p: float | None = ...,
        *,
        stream: Literal[False],
        **params: Any,
    ) -> str | list[str]: ...
    @overload
    async def complete_prompt(
        self,
        prompt: str | Sequence[str],
        max_tokens: int | None = ...,
        temperature: float | None = ...,
        top_p: float | None = ...,
        stream: bool = ...,
        **params: Any,
    ) -> AsyncTextStream | str | list[str]: ...
    async def complete_prompt(
        self,
        prompt: str | Sequence[str],
        max_tokens: int | None = DEFAULT_MAX_TOKENS,
        temperature: float | None = DEFAULT_TEMPERATURE,
        top_p: float | None = DEFAULT_TOP_P,
        stream: bool = True,
        **params: Any,
    ) -> AsyncTextStream | str | list[str]:
        """Completes a prompt; see `NCompass.complete_prompt` (streams are async iterators).

        Args:
            prompt: the text to complete, or a list of texts (a batch, with ``stream=False``).
            max_tokens: the most tokens to generate (≥ 1).
            temperature: sampling temperature, in [0, 2].
            top_p: nucleus sampling mass, in (0, 1].
            stream: True returns an :class:`AsyncTextStream` of new text pieces; False the finished
                text (a list, in input order, for a list prompt).
            **params: any other openai completions parameter or vLLM extension (sent in ``extra_body``).
        """
        plan = plan_completion(prompt, Sampling(max_tokens, temperature, top_p), stream, params)
        return await self._complete_prompt(plan, None)

    async def _complete_prompt(
        self,
        plan: Planned,
        on_close: Callable[[], None] | None,
    ) -> AsyncTextStream | str | list[str]:
        client = self._nc()
        kwargs = plan.kwargs(plan.model or await client.resolve_model())
        if plan.stream:
            raw = client.completions.with_streaming_response.create(
                prompt=plan.payload, stream=True, **kwargs
            )
            response = await raw.__aenter__()
            return await open_async_text_stream(response.http_response, chat=False, on_close=on_close)
        completion = await client.completions.create(prompt=plan.payload, stream=False, **kwargs)
        return completion_texts(plan, completion.choices)

    @overload
    async def complete_chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool = ...,
        chat_template: str | None = ...,
        max_tokens: int | None = ...,
        temperature: float | None = ...,
        top_p: float | None = ...,
        stream: Literal[True] = ...,
        **params: Any,
    ) -> AsyncTextStream: ...
    @overload
    async def complete_chat(
        self,
        messages: Sequence[Mapping[str, Any]] | Sequence[Sequence[Mapping[str, Any]]],
        add_generation_prompt: bool = ...,
        chat_template: str | None = ...,
        max_tokens: int | None = ...,
        temperature: float | None = ...,
        top_p: float | None = ...,
        *,
        stream: Literal[False],
        **params: Any,
    ) -> str | list[str]: ...
    @overload
    async def complete_chat(
        self,
        messages: Sequence[Mapping[str, Any]] | Sequence[Sequence[Mapping[str, Any]]],
        add_generation_prompt: bool = ...,
        chat_template: str | None = ...,
        max_tokens: int | None = ...,
        temperature: float | None = ...,
        top_p: float | None = ...,
        stream: bool = ...,
        **params: Any,
    ) -> AsyncTextStream | str | list[str]: ...
    async def complete_chat(
        self,
        messages: Sequence[Mapping[str, Any]] | Sequence[Sequence[Mapping[str, Any]]],
        add_generation_prompt: bool = True,
        chat_template: str | None = None,
        max_tokens: int | None = DEFAULT_MAX_TOKENS,
        temperature: float | None = DEFAULT_TEMPERATURE,
        top_p: float | None = DEFAULT_TOP_P,
        stream: bool = True,
        **params: Any,
    ) -> AsyncTextStream | str | list[str]:
        """Answers a conversation; see `NCompass.complete_chat` (streams are async iterators).

        Args:
            messages: a list of ``{"role": ..., "content": ...}`` messages, or a list of such lists (a
                batch, with ``stream=False``: concurrent requests, answers in input order).
            add_generation_prompt: end the rendered prompt with the assistant's turn opener.
            chat_template: a Jinja chat template; None uses the model's own.
            max_tokens: the most tokens to generate (≥ 1).
            temperature: sampling temperature, in [0, 2].
            top_p: nucleus sampling mass, in (0, 1].
            stream: True returns an :class:`AsyncTextStream`; False the finished text (or list).
            **params: any other openai chat parameter or vLLM extension (sent in ``extra_body``).
        """
        values = Sampling(max_tokens, temperature, top_p)
        plan = plan_chat(messages, add_generation_prompt, chat_template, values, stream, params)
        return await self._complete_chat(plan, None)

    async def _complete_chat(
        self,
        plan: Planned,
        on_close: Callable[[], None] | None,
    ) -> AsyncTextStream | str | list[str]:
        client = self._nc()
        kwargs = plan.kwargs(plan.model or await client.resolve_model())
        if plan.stream:
            raw = client.chat.completions.with_streaming_response.create(
                messages=plan.payload, stream=True, **kwargs
            )
            response = await raw.__aenter__()
            return await open_async_text_stream(response.http_response, chat=True, on_close=on_close)

        async def answer(conversation: Sequence[Mapping[str, Any]]) -> str | list[str]:
            completion = await client.chat.completions.create(
                messages=cast(Any, list(conversation)), stream=False, **kwargs
            )
            return chat_texts(completion.choices)

        if not plan.batch:
            return await answer(plan.payload)
        conversations = cast("Sequence[Sequence[Mapping[str, Any]]]", plan.payload)
        results: list[Any] = [None] * len(conversations)
        errors: list[Exception] = []
        limiter = anyio.CapacityLimiter(CHAT_BATCH_CONCURRENCY)

        async with anyio.create_task_group() as tg:

            async def run(i: int, conversation: Sequence[Mapping[str, Any]]) -> None:
                async with limiter:
                    try:
                        results[i] = await answer(conversation)
                    except Exception as exc:
                        # Raise the first failure itself (as the sync batch does), not an
                        # ExceptionGroup, and stop the rest of the batch.
                        errors.append(exc)
                        tg.cancel_scope.cancel()

            for i, conversation in enumerate(conversations):
                tg.start_soon(run, i, conversation)
        if errors:
            raise errors[0]
        return results

    async def print_prompt(self, response_iterator: AsyncIterable[str] | Iterable[str]) -> None:
        """Prints each text piece as it arrives (flushed), then a newline."""
        if isinstance(response_iterator, str):
            print_pieces((response_iterator,))
            return
        if not isinstance(response_iterator, AsyncIterable):
            print_pieces(response_iterator)
            return
        write = sys.stdout.write
        flush = sys.stdout.flush
        async for piece in response_iterator:
            write(piece)
            flush()
        write("\n")
        flush()
