"""The nCompass 0.0.x methods, mixed into :class:`NCompass` and :class:`AsyncNCompass`.

``start_session``, ``stop_session``, ``model_is_running``, ``wait_until_model_running``,
``complete_prompt``, ``complete_chat`` and ``print_prompt`` keep the 0.0.x signatures and results, on
top of the openai resources: requests get openai's auth, retries, timeouts and nCompass's
``Idempotency-Key``; streamed text takes the fast path of ``_streaming``; arguments are checked before
any network call (``_validation``).
"""

from __future__ import annotations

import contextlib
import inspect
import sys
from collections.abc import AsyncIterable, Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Literal, cast, overload

import anyio
import openai
from openai.resources.chat.completions import Completions as _ChatCompletions
from openai.resources.completions import Completions as _Completions

from ._streaming import AsyncTextStream, TextStream, open_async_text_stream, open_text_stream
from ._validation import split_params, validate_messages, validate_prompt, validate_sampling

if TYPE_CHECKING:
    from ._client import AsyncNCompass, NCompass
    from .types import Session

__all__ = ["CHAT_BATCH_CONCURRENCY", "AsyncLegacyMixin", "SyncLegacyMixin"]

CHAT_BATCH_CONCURRENCY = 4
"""How many conversations of a chat batch are in flight at once (chat has no batched request)."""

# Parameters openai's create() takes as keywords; anything else (vLLM's top_k, min_p, …) goes in
# extra_body. Read from the installed openai so 2.x and 3.x each get their own list.
_COMPLETION_PARAMS = frozenset(inspect.signature(_Completions.create).parameters) - {"self"}
_CHAT_PARAMS = frozenset(inspect.signature(_ChatCompletions.create).parameters) - {"self"}

# Errors after which the model's state is simply unknown (so "not running", 0.0.x's answer).
_UNREACHABLE = (openai.APIConnectionError, openai.InternalServerError)

# The 0.0.x wait polls sooner than the client's default: its timeout is 20 s, not 600 s.
_FIRST_POLL = 0.25


def _sampling(max_tokens: int | None, temperature: float | None, top_p: float | None) -> dict[str, Any]:
    # None means the server's default: leave the field out rather than send null.
    values = {"max_tokens": max_tokens, "temperature": temperature, "top_p": top_p}
    return {name: value for name, value in values.items() if value is not None}


def _chat_extra(
    add_generation_prompt: bool, chat_template: str | None, params: dict[str, Any]
) -> dict[str, Any]:
    template_type = params.pop("template_type", None)
    if template_type is not None:
        raise ValueError(
            "template_type is no longer supported: pass the Jinja chat template itself as "
            "chat_template='...', or leave it out to use the model's own template."
        )
    if add_generation_prompt and params.get("continue_final_message"):
        raise ValueError(
            "continue_final_message=True continues the last assistant message, so it cannot be combined "
            "with add_generation_prompt=True: pass add_generation_prompt=False."
        )
    if chat_template is not None and not isinstance(chat_template, str):
        raise ValueError("chat_template must be a Jinja template string (or None for the model's own).")
    extra: dict[str, Any] = {"add_generation_prompt": bool(add_generation_prompt)}
    if chat_template is not None:
        extra["chat_template"] = chat_template
    return extra


def _request(
    model: str,
    params: dict[str, Any],
    known: frozenset[str],
    sampling: dict[str, Any],
    extra: Mapping[str, Any],
) -> dict[str, Any]:
    """The keyword arguments of openai's create(): known fields as keywords, the rest in extra_body."""
    kwargs = split_params({**extra, **params}, known)
    kwargs.update(sampling)
    kwargs["model"] = model
    return kwargs


def _texts(choices: Sequence[Any], attr: Callable[[Any], str | None]) -> list[str]:
    ordered = sorted(choices, key=lambda choice: choice.index)
    return [attr(choice) or "" for choice in ordered]


def _completion_text(choice: Any) -> str | None:
    return cast("str | None", choice.text)


def _chat_text(choice: Any) -> str | None:
    return cast("str | None", choice.message.content)


def _one_or_many(texts: list[str]) -> str | list[str]:
    return texts[0] if len(texts) == 1 else texts


def _stream_batch_error(what: str) -> ValueError:
    return ValueError(
        f"stream=True streams one {what}; for a batch (a list of {what}s) pass stream=False, which returns "
        "the list of answers in input order."
    )


def _print_pieces(pieces: Iterable[str]) -> None:
    write = sys.stdout.write
    flush = sys.stdout.flush
    for piece in pieces:
        write(piece)
        flush()
    write("\n")
    flush()


class SyncLegacyMixin:
    """0.0.x methods of :class:`ncompass_openai.NCompass`."""

    def _nc(self) -> NCompass:
        return cast("NCompass", self)

    # -- sessions and model ------------------------------------------------------------------------

    def start_session(self, *, timeout: float = 20.0) -> Session:
        """Starts a time-billed session, then waits until the model is running (as 0.0.x did).

        Args:
            timeout: seconds to wait for the model. If it is not running by then, the session just
                started is stopped again (no billing while nothing can answer) and
                :class:`DeploymentTimeoutError` says how to start the model.
        """
        client = self._nc()
        session = client.sessions.start()
        try:
            self.wait_until_model_running(timeout=timeout)
        except BaseException:
            if session.status == "active":
                # On failure the server's idle lease stops it; the wait error is the one to report.
                with contextlib.suppress(openai.OpenAIError):
                    client.sessions.stop(session.id)
            raise
        return session

    def stop_session(self) -> bool:
        """Stops the active session; returns True (billing stops now)."""
        self._nc().sessions.stop()
        return True

    def model_is_running(self) -> bool:
        """True when the model can answer now; False when it cannot, or the server cannot be reached."""
        try:
            return bool(self._nc().deployment.is_running())
        except _UNREACHABLE:
            return False

    def wait_until_model_running(self, timeout: float = 20.0) -> None:
        """Blocks until the model is running, polling with backoff and the server's ready estimate.

        Args:
            timeout: seconds to wait; then :class:`DeploymentTimeoutError` tells how to start the model
                (``ncompass model start`` / ``nccli-start-model``) and check it.
        """
        # The client's one poller (it follows the server's estimated_ready_at), with 0.0.x's tolerance.
        self._nc().deployment._wait(timeout, _FIRST_POLL, None, tolerate=_UNREACHABLE)

    # -- completions -------------------------------------------------------------------------------

    @overload
    def complete_prompt(
        self,
        prompt: str,
        max_tokens: int | None = ...,
        temperature: float | None = ...,
        top_p: float | None = ...,
        stream: Literal[True] = ...,
        **params: Any,
    ) -> TextStream: ...
    @overload
    def complete_prompt(
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
    def complete_prompt(
        self,
        prompt: str | Sequence[str],
        max_tokens: int | None = ...,
        temperature: float | None = ...,
        top_p: float | None = ...,
        stream: bool = ...,
        **params: Any,
    ) -> TextStream | str | list[str]: ...
    def complete_prompt(
        self,
        prompt: str | Sequence[str],
        max_tokens: int | None = 300,
        temperature: float | None = 0.5,
        top_p: float | None = 0.9,
        stream: bool = True,
        **params: Any,
    ) -> TextStream | str | list[str]:
        """Completes a prompt.

        Args:
            prompt: the text to complete, or a list of texts (a batch: one request, with
                ``stream=False``).
            max_tokens: the most tokens to generate (≥ 1).
            temperature: sampling temperature, in [0, 2].
            top_p: nucleus sampling mass, in (0, 1].
            stream: True returns a :class:`TextStream` of the new text pieces as they are generated;
                False returns the finished text (a list of texts, in input order, for a list prompt).
            **params: any other openai completions parameter (``stop``, ``seed``, ``n``, ``extra_headers``,
                ``timeout``, …) or vLLM extension (``top_k``, ``min_p``, ``repetition_penalty``: sent in
                ``extra_body``).
        """
        return self._complete_prompt(prompt, max_tokens, temperature, top_p, stream, params, None)

    def _complete_prompt(
        self,
        prompt: str | Sequence[str],
        max_tokens: int | None,
        temperature: float | None,
        top_p: float | None,
        stream: bool,
        params: dict[str, Any],
        on_close: Callable[[], None] | None,
    ) -> TextStream | str | list[str]:
        batch = validate_prompt(prompt)
        validate_sampling(max_tokens, temperature, top_p)
        if stream and batch:
            raise _stream_batch_error("prompt")
        client = self._nc()
        model = params.pop("model", None) or client.resolve_model()
        kwargs = _request(model, params, _COMPLETION_PARAMS, _sampling(max_tokens, temperature, top_p), {})
        payload: str | list[str] = list(prompt) if batch else cast(str, prompt)
        if stream:
            raw = client.completions.with_streaming_response.create(prompt=payload, stream=True, **kwargs)
            return open_text_stream(raw.__enter__().http_response, chat=False, on_close=on_close)
        completion = client.completions.create(prompt=payload, stream=False, **kwargs)
        texts = _texts(completion.choices, _completion_text)
        return texts if batch else _one_or_many(texts)

    @overload
    def complete_chat(
        self,
        messages: Sequence[Mapping[str, Any]],
        add_generation_prompt: bool = ...,
        chat_template: str | None = ...,
        max_tokens: int | None = ...,
        temperature: float | None = ...,
        top_p: float | None = ...,
        stream: Literal[True] = ...,
        **params: Any,
    ) -> TextStream: ...
    @overload
    def complete_chat(
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
    def complete_chat(
        self,
        messages: Sequence[Mapping[str, Any]] | Sequence[Sequence[Mapping[str, Any]]],
        add_generation_prompt: bool = ...,
        chat_template: str | None = ...,
        max_tokens: int | None = ...,
        temperature: float | None = ...,
        top_p: float | None = ...,
        stream: bool = ...,
        **params: Any,
    ) -> TextStream | str | list[str]: ...
    def complete_chat(
        self,
        messages: Sequence[Mapping[str, Any]] | Sequence[Sequence[Mapping[str, Any]]],
        add_generation_prompt: bool = True,
        chat_template: str | None = None,
        max_tokens: int | None = 300,
        temperature: float | None = 0.5,
        top_p: float | None = 0.9,
        stream: bool = True,
        **params: Any,
    ) -> TextStream | str | list[str]:
        """Answers a conversation.

        Args:
            messages: a list of ``{"role": ..., "content": ...}`` messages, or a list of such lists (a
                batch, with ``stream=False``: sent as concurrent requests, answers in input order).
            add_generation_prompt: end the rendered prompt with the assistant's turn opener.
            chat_template: a Jinja chat template to render ``messages`` with; None uses the model's own.
            max_tokens: the most tokens to generate (≥ 1).
            temperature: sampling temperature, in [0, 2].
            top_p: nucleus sampling mass, in (0, 1].
            stream: True returns a :class:`TextStream` of the new text pieces; False the finished text
                (a list, in input order, for a batch).
            **params: any other openai chat parameter or vLLM extension (``top_k``,
                ``continue_final_message``, ``chat_template_kwargs``, …: sent in ``extra_body``).
        """
        return self._complete_chat(
            messages,
            add_generation_prompt,
            chat_template,
            max_tokens,
            temperature,
            top_p,
            stream,
            params,
            None,
        )

    def _complete_chat(
        self,
        messages: Sequence[Mapping[str, Any]] | Sequence[Sequence[Mapping[str, Any]]],
        add_generation_prompt: bool,
        chat_template: str | None,
        max_tokens: int | None,
        temperature: float | None,
        top_p: float | None,
        stream: bool,
        params: dict[str, Any],
        on_close: Callable[[], None] | None,
    ) -> TextStream | str | list[str]:
        batch = validate_messages(messages)
        validate_sampling(max_tokens, temperature, top_p)
        extra = _chat_extra(add_generation_prompt, chat_template, params)
        if stream and batch:
            raise _stream_batch_error("conversation")
        client = self._nc()
        model = params.pop("model", None) or client.resolve_model()
        kwargs = _request(model, params, _CHAT_PARAMS, _sampling(max_tokens, temperature, top_p), extra)
        if stream:
            raw = client.chat.completions.with_streaming_response.create(
                messages=cast(Any, list(messages)), stream=True, **kwargs
            )
            return open_text_stream(raw.__enter__().http_response, chat=True, on_close=on_close)

        def answer(conversation: Sequence[Mapping[str, Any]]) -> str | list[str]:
            completion = client.chat.completions.create(
                messages=cast(Any, list(conversation)), stream=False, **kwargs
            )
            return _one_or_many(_texts(completion.choices, _chat_text))

        if not batch:
            return answer(cast("Sequence[Mapping[str, Any]]", messages))
        conversations = cast("Sequence[Sequence[Mapping[str, Any]]]", messages)
        with ThreadPoolExecutor(max_workers=min(CHAT_BATCH_CONCURRENCY, len(conversations))) as pool:
            futures = [pool.submit(answer, conversation) for conversation in conversations]
            try:
                return cast("list[str]", [future.result() for future in futures])
            except BaseException:
                for future in futures:
                    future.cancel()
                raise

    def print_prompt(self, response_iterator: Iterable[str]) -> None:
        """Prints each text piece as it arrives (flushed), then a newline."""
        if isinstance(response_iterator, str):
            response_iterator = (response_iterator,)
        _print_pieces(response_iterator)


class AsyncLegacyMixin:
    """0.0.x methods of :class:`ncompass_openai.AsyncNCompass` (awaitables and async iterators)."""

    def _nc(self) -> AsyncNCompass:
        return cast("AsyncNCompass", self)

    async def start_session(self, *, timeout: float = 20.0) -> Session:
        """Starts a time-billed session, then waits until the model is running (as 0.0.x did).

        Args:
            timeout: seconds to wait for the model. If it is not running by then, the session just
                started is stopped again and :class:`DeploymentTimeoutError` says how to start the model.
        """
        client = self._nc()
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
        except _UNREACHABLE:
            return False

    async def wait_until_model_running(self, timeout: float = 20.0) -> None:
        """Waits until the model is running, polling with backoff and the server's ready estimate.

        Args:
            timeout: seconds to wait; then :class:`DeploymentTimeoutError` tells how to start the model
                (``ncompass model start`` / ``nccli-start-model``) and check it.
        """
        await self._nc().deployment._wait(timeout, _FIRST_POLL, None, tolerate=_UNREACHABLE)

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
        max_tokens: int | None = 300,
        temperature: float | None = 0.5,
        top_p: float | None = 0.9,
        stream: bool = True,
        **params: Any,
    ) -> AsyncTextStream | str | list[str]:
        """Completes a prompt; see :meth:`NCompass.complete_prompt` (streams are async iterators).

        Args:
            prompt: the text to complete, or a list of texts (a batch, with ``stream=False``).
            max_tokens: the most tokens to generate (≥ 1).
            temperature: sampling temperature, in [0, 2].
            top_p: nucleus sampling mass, in (0, 1].
            stream: True returns an :class:`AsyncTextStream` of new text pieces; False the finished
                text (a list, in input order, for a list prompt).
            **params: any other openai completions parameter or vLLM extension (sent in ``extra_body``).
        """
        batch = validate_prompt(prompt)
        validate_sampling(max_tokens, temperature, top_p)
        if stream and batch:
            raise _stream_batch_error("prompt")
        client = self._nc()
        model = params.pop("model", None) or await client.resolve_model()
        kwargs = _request(model, params, _COMPLETION_PARAMS, _sampling(max_tokens, temperature, top_p), {})
        payload: str | list[str] = list(prompt) if batch else cast(str, prompt)
        if stream:
            raw = client.completions.with_streaming_response.create(prompt=payload, stream=True, **kwargs)
            response = await raw.__aenter__()
            return await open_async_text_stream(response.http_response, chat=False)
        completion = await client.completions.create(prompt=payload, stream=False, **kwargs)
        texts = _texts(completion.choices, _completion_text)
        return texts if batch else _one_or_many(texts)

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
        max_tokens: int | None = 300,
        temperature: float | None = 0.5,
        top_p: float | None = 0.9,
        stream: bool = True,
        **params: Any,
    ) -> AsyncTextStream | str | list[str]:
        """Answers a conversation; see :meth:`NCompass.complete_chat` (streams are async iterators).

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
        batch = validate_messages(messages)
        validate_sampling(max_tokens, temperature, top_p)
        extra = _chat_extra(add_generation_prompt, chat_template, params)
        if stream and batch:
            raise _stream_batch_error("conversation")
        client = self._nc()
        model = params.pop("model", None) or await client.resolve_model()
        kwargs = _request(model, params, _CHAT_PARAMS, _sampling(max_tokens, temperature, top_p), extra)
        if stream:
            raw = client.chat.completions.with_streaming_response.create(
                messages=cast(Any, list(messages)), stream=True, **kwargs
            )
            response = await raw.__aenter__()
            return await open_async_text_stream(response.http_response, chat=True)

        async def answer(conversation: Sequence[Mapping[str, Any]]) -> str | list[str]:
            completion = await client.chat.completions.create(
                messages=cast(Any, list(conversation)), stream=False, **kwargs
            )
            return _one_or_many(_texts(completion.choices, _chat_text))

        if not batch:
            return await answer(cast("Sequence[Mapping[str, Any]]", messages))
        conversations = cast("Sequence[Sequence[Mapping[str, Any]]]", messages)
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
            _print_pieces((response_iterator,))
            return
        if not isinstance(response_iterator, AsyncIterable):
            _print_pieces(response_iterator)
            return
        write = sys.stdout.write
        flush = sys.stdout.flush
        async for piece in response_iterator:
            write(piece)
            flush()
        write("\n")
        flush()
