"""The 0.0.x methods of :class:`NCompass` (sync): the twin of ``_legacy_async.py``."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Literal, cast, overload

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
from ._streaming import TextStream, open_text_stream

if TYPE_CHECKING:
    from ._client import NCompass
    from .types import Session

__all__ = ["SyncLegacyMixin"]


class SyncLegacyMixin:
    """0.0.x methods of :class:`ncompass_openai.NCompass`."""

    def _nc(self) -> NCompass:
        return cast("NCompass", self)

    # -- sessions and model ------------------------------------------------------------------------

    def start_session(self, *, timeout: float = 20.0, start_model: bool = False) -> Session:
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
        client.deployment._before_session(timeout, start_model)
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
        except UNREACHABLE:
            return False

    def wait_until_model_running(self, timeout: float = 20.0) -> None:
        """Blocks until the model is running, polling with backoff and the server's ready estimate.

        Args:
            timeout: seconds to wait; then
                [`DeploymentTimeoutError`][ncompass_openai._exceptions.DeploymentTimeoutError]
                tells how to start the model (``ncompass model start`` / ``nccli-start-model``) and check it.
        """
        # The client's one poller (it follows the server's estimated_ready_at), with 0.0.x's tolerance.
        self._nc().deployment._wait(timeout, FIRST_POLL, None, tolerate=UNREACHABLE)

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
        max_tokens: int | None = DEFAULT_MAX_TOKENS,
        temperature: float | None = DEFAULT_TEMPERATURE,
        top_p: float | None = DEFAULT_TOP_P,
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
        plan = plan_completion(prompt, Sampling(max_tokens, temperature, top_p), stream, params)
        return self._complete_prompt(plan, None)

    def _complete_prompt(
        self,
        plan: Planned,
        on_close: Callable[[], None] | None,
    ) -> TextStream | str | list[str]:
        client = self._nc()
        kwargs = plan.kwargs(plan.model or client.resolve_model())
        if plan.stream:
            raw = client.completions.with_streaming_response.create(
                prompt=plan.payload, stream=True, **kwargs
            )
            return open_text_stream(raw.__enter__().http_response, chat=False, on_close=on_close)
        completion = client.completions.create(prompt=plan.payload, stream=False, **kwargs)
        return completion_texts(plan, completion.choices)

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
        max_tokens: int | None = DEFAULT_MAX_TOKENS,
        temperature: float | None = DEFAULT_TEMPERATURE,
        top_p: float | None = DEFAULT_TOP_P,
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
        values = Sampling(max_tokens, temperature, top_p)
        plan = plan_chat(messages, add_generation_prompt, chat_template, values, stream, params)
        return self._complete_chat(plan, None)

    def _complete_chat(
        self,
        plan: Planned,
        on_close: Callable[[], None] | None,
    ) -> TextStream | str | list[str]:
        client = self._nc()
        kwargs = plan.kwargs(plan.model or client.resolve_model())
        if plan.stream:
            raw = client.chat.completions.with_streaming_response.create(
                messages=plan.payload, stream=True, **kwargs
            )
            return open_text_stream(raw.__enter__().http_response, chat=True, on_close=on_close)

        def answer(conversation: Sequence[Mapping[str, Any]]) -> str | list[str]:
            completion = client.chat.completions.create(
                messages=cast(Any, list(conversation)), stream=False, **kwargs
            )
            return chat_texts(completion.choices)

        if not plan.batch:
            return answer(plan.payload)
        conversations = cast("Sequence[Sequence[Mapping[str, Any]]]", plan.payload)
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
        print_pieces(response_iterator)
