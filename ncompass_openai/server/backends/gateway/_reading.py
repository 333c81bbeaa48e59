"""An upstream's answer read into a stream's typed events (chat's and completions' choices).

A chunk with logprobs becomes one event per token (the first with the chunk's text), as an engine's
stream has; without them, one event per chunk, counted as one token. A tool call's piece is a typed
:class:`ToolCallDelta`. Under a check (a declared ``response_format``, or tools), a choice's text or
calls are held back until it ends, and sent only if the check passes; else an :class:`UpstreamError`
ends the stream and nothing of the choice was sent.

Two bounds hold whatever the upstream honours: a choice that reaches the request's token limit ends
there (``finish_reason: "length"``; once every choice has ended, the relay closes the upstream request),
and with ``min_tokens: 1`` checked here, a choice that ends without a token is the upstream's error.
"""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING, Any

from ..._exceptions import UpstreamError
from ...engines._base import TokenLogprobs
from ...protocol._tools import ToolCall, ToolCallDelta, merge_tool_calls
from ...runtime._bridge import Sink
from ...runtime._events import GenerationEvent, Usage
from ._logprobs import parse_chat_logprobs, parse_completion_logprobs

if TYPE_CHECKING:
    from ._answer_check import AnswerCheck, CallsCheck  # jsonschema: imported only when answers are checked

__all__ = ["Reading", "take_choice", "usage_of"]


def usage_of(usage: Any, prefix: str = "prompt", completion: str = "completion") -> Usage | None:
    """An upstream's usage report (``None`` when it has none): chat's and completions' names by default,
    the Responses API's with ``prefix="input", completion="output"``."""
    if not isinstance(usage, dict):
        return None
    details = usage.get(f"{prefix}_tokens_details")
    cached = int(details.get("cached_tokens") or 0) if isinstance(details, dict) else 0
    return Usage(int(usage.get(f"{prefix}_tokens") or 0), int(usage.get(f"{completion}_tokens") or 0), cached)


def _delta(value: Any) -> ToolCallDelta:
    function = value.get("function") or {}
    return ToolCallDelta(
        int(value.get("index") or 0), value.get("id"), function.get("name"), function.get("arguments") or ""
    )


def take_choice(choice: dict[str, Any], read: Reading, whole: bool) -> None:
    """One choice of an upstream's chunk (``whole``: of its whole answer) into ``read``."""
    index = int(choice.get("index") or 0)
    finish = choice.get("finish_reason")
    if read.chat:
        part = choice.get("message" if whole else "delta") or {}
        raw = part.get("tool_calls") or ()
        if whole:  # a whole answer's calls have no index; a stream's deltas do
            raw = [{"index": k, **call} for k, call in enumerate(raw)]
        calls = tuple(_delta(call) for call in raw)
        if calls and not read.tools:
            raise UpstreamError("The upstream answered with tool calls, which were not asked for.")
        text = part.get("content") or ""
        tokens = parse_chat_logprobs(choice.get("logprobs"))
    else:
        text, calls = choice.get("text") or "", ()
        tokens = parse_completion_logprobs(choice.get("logprobs"))
    read.add(index, text, finish or ("stop" if whole else None), tokens, calls)


class Reading:
    """One upstream answer being read into ``sink``: each choice's token count, and what a check holds.

    Args:
        sink: where the events go.
        chat: the answer is chat's (else completions').
        tools: the request offered tools (an answer's calls are refused otherwise).
        check: the check of each choice's text against the request's format.
        calls_check: the check of each choice's calls against the request's tools.
        choices: how many choices the answer has.
        limit: the request's token limit per choice, enforced here too.
        min_tokens: checked here (0 or 1) for an upstream not declared to honour ``min_tokens``.
    """

    def __init__(
        self,
        sink: Sink,
        *,
        chat: bool,
        tools: bool,
        check: AnswerCheck | None = None,
        calls_check: CallsCheck | None = None,
        choices: int = 1,
        limit: int | None = None,
        min_tokens: int = 0,
    ) -> None:
        self.sink, self.chat, self.tools, self.check, self.calls_check = sink, chat, tools, check, calls_check
        self.choices, self.limit, self.min_tokens = choices, limit, min_tokens
        self.held_calls: dict[int, list[ToolCall]] = collections.defaultdict(list)
        self.counts: collections.Counter[int] = collections.Counter()
        self.held: dict[int, list[tuple[str, list[TokenLogprobs]]]] = collections.defaultdict(list)
        self.ended: set[int] = set()  # choices whose last event was pushed
        self.cut = False
        """The token limit ended a choice before the upstream did (the relay closes the upstream request
        once every choice has ended, rather than reading it to its end)."""
        self._produced: set[int] = set()  # choices with at least one token (or call piece)

    @property
    def complete(self) -> bool:
        """Every choice has ended."""
        return len(self.ended) >= self.choices

    def usage(self, usage: Usage | None) -> None:
        """The upstream's own count of the request's tokens, when it reports one."""
        if usage is not None:
            self.sink.push(usage)

    def add(
        self,
        index: int,
        text: str,
        finish: Any,
        tokens: list[TokenLogprobs],
        calls: tuple[ToolCallDelta, ...],
    ) -> None:
        if index in self.ended:  # cut at the token limit: the rest of the choice is not sent
            return
        if text or tokens or calls:
            self._produced.add(index)
        elif finish is not None and self.min_tokens and index not in self._produced:
            raise UpstreamError(
                "The upstream ended its answer without a token, and `min_tokens: 1` asks for one; retry."
            )
        if calls:  # a tool call's piece, counted as a token: passed on, or held for the check
            self.counts[index] += 1
            if self.calls_check is None:
                self.sink.push(GenerationEvent(index, "", None, self.counts[index], tool_calls=calls))
            else:
                merge_tool_calls(self.held_calls[index], calls)
        if not text and not tokens and finish is None:
            return
        if finish is not None and self.calls_check is not None:
            self._check_calls(index, finish)
        if self.check is None:
            self._push(index, text, finish, tokens)
            return
        self.held[index].append((text, tokens))
        if finish is None:
            return
        parts = self.held.pop(index)
        whole = "".join(part for part, _ in parts)
        why = self.check(whole) if finish == "stop" else None
        if why is not None:
            raise UpstreamError(
                f"The upstream's answer does not match the request's response_format ({why}); nothing of it "
                "was sent. The upstream is declared to enforce it (--upstream-supports response_format): "
                "check that it does."
            )
        self._push(index, whole, finish, [t for _, held in parts for t in held])

    def _check_calls(self, index: int, finish: Any) -> None:
        """Send a choice's held calls whole (one delta each), once ``calls_check`` passes them."""
        assert self.calls_check is not None
        whole = self.held_calls.pop(index, [])
        why = self.calls_check(whole, finish)
        if why is not None:
            raise UpstreamError(
                f"The upstream's tool calls do not match the request's tools ({why}); nothing of them was "
                "sent. The upstream is declared to enforce them (--upstream-supports tools): check that "
                "it does."
            )
        if whole:
            deltas = tuple(ToolCallDelta(k, c.id, c.name, c.arguments) for k, c in enumerate(whole))
            self.sink.push(GenerationEvent(index, "", None, self.counts[index], tool_calls=deltas))

    def _push(self, index: int, text: str, finish: Any, tokens: list[TokenLogprobs]) -> None:
        if not tokens:
            if text:
                self.counts[index] += 1
            self._send(GenerationEvent(index, text, finish, self.counts[index]))
            return
        for k, token in enumerate(tokens):
            self.counts[index] += 1
            last = k == len(tokens) - 1
            event = GenerationEvent(
                index, text if k == 0 else "", finish if last else None, self.counts[index], token
            )
            if self._send(event):
                return

    def _send(self, event: GenerationEvent) -> bool:
        """Push ``event``; True when its choice ended. A token past the limit (an upstream that does not
        honour it) is not sent: the choice ends at the limit instead, with ``length``."""
        if self.limit is not None and event.completion_tokens > self.limit:
            event = GenerationEvent(event.index, "", "length", self.limit)
            self.cut = True
        self.sink.push(event)
        if event.finish_reason is not None:
            self.ended.add(event.index)
        return event.finish_reason is not None
