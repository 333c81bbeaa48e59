"""The openai engine's runtime: whole requests forwarded to OpenAI-compatible upstream servers.

``ncompass serve --engine openai --upstream URL`` puts the nCompass protocol (tenants, sessions, billing,
idempotency, the deployment lifecycle, bookings) in front of servers that speak OpenAI's API (vLLM,
SGLang, llama.cpp's ``llama-server``, llama-cpp-python's server, Ollama, another nCompass server). The
routes and serving modules are the ones every engine uses; only the source of a request's events
differs: :meth:`UpstreamRuntime.forward` sends the request to a replica and turns the upstream's chunks
(or its whole answer, for a request that is not streamed) into the same :class:`GenerationEvent` items
an engine produces, so answers, chunks, usage and billing are built by the same code. ::

    runtime = UpstreamRuntime(settings)        # --upstream, --upstream-model, --upstream-api-key, ...
    await runtime.load()                       # runs --start-command, waits for a healthy replica
    stream = await runtime.forward(tenant, "/chat/completions", body, choices=1)   # after upstream's 200
    async for event in stream: ...             # GenerationEvent(index, text, finish_reason, tokens)

- A request that fails before its first byte (unreachable replica, a 5xx) is retried once on another
  replica; an upstream's 4xx is the tenant's answer (a 400 with its message), a 429 or 503 keeps its
  ``Retry-After``, anything else is a 502 ``upstream_error`` (``_errors.py``).
- A stream cut mid-way, or silent for ``--upstream-timeout`` seconds, ends with the protocol's in-stream
  error event: never a silent truncation, never a hang. A whole answer not there within
  ``--upstream-answer-timeout`` seconds is a 502. Closing a stream (the client went away) closes
  the upstream request, which stops its generation there.
- The upstream key is only ever in the HTTP client's headers: it is never logged, and it is cut out of
  every upstream message passed on.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
import os
import signal
import subprocess
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson

from .._streaming import _loads, _SSEParser
from ._bridge import END, GenerationEvent, GenerationStream, LoopSink, Sink
from ._exceptions import ModelNotRunning, ModelUnavailableError, QueueFullError, UpstreamError
from ._logprobs import parse_chat_logprobs, parse_completion_logprobs
from ._replicas import Replica, ReplicaPool
from ._runtime import Runtime, TokenLogprobs
from ._settings import ServerSettings
from ._tools import merge_tool_calls

if TYPE_CHECKING:
    from ._answer_check import AnswerCheck, CallsCheck  # jsonschema: imported only when answers are checked
    from ._forward_responses import ResponseEvents

__all__ = ["UpstreamRuntime", "take_usage"]

logger = logging.getLogger("ncompass_openai.server")

_CONNECT_TIMEOUT = 10.0
_JSON = {"Content-Type": "application/json"}
# What a failed upstream request raises: aiohttp's errors (its read timeouts are also TimeoutError).
_HTTP_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError)
_STDERR_TAIL = 2000  # characters of a failed command's stderr kept in the deployment's error


class UpstreamRuntime(Runtime):
    """Forwards requests to the replicas of one upstream model.

    Args:
        settings: the server's settings (``upstream``, ``upstream_model``, ``upstream_api_key``,
            ``served_model_name``, ``upstream_supports``, ``upstream_timeout``,
            ``upstream_answer_timeout``, ``health_interval``,
            ``start_command``, ``stop_command``, ``start_timeout``, ``max_queue_per_key``).
    """

    def __init__(self, settings: ServerSettings) -> None:
        key = settings.upstream_api_key
        self._secret = key or None
        self._headers = {"Authorization": f"Bearer {key}"} if key else {}
        # aiohttp, not httpx: its C parser reads a streamed chunk with about a quarter of the CPU, and a
        # gateway shares its machine's cores with what it forwards to. Made on the loop, at the first load.
        self._session: aiohttp.ClientSession | None = None
        self.pool = ReplicaPool(settings.upstream, settings.health_interval)
        self.supports = frozenset(settings.upstream_supports)
        self.max_queue_per_key = settings.max_queue_per_key
        self._timeout = settings.upstream_timeout
        # A whole answer's one read: its own bound (the default sock_read bounds each read of a stream).
        self._answer_timeout = settings.upstream_answer_timeout
        self._whole = aiohttp.ClientTimeout(
            total=None, sock_connect=_CONNECT_TIMEOUT, sock_read=self._answer_timeout
        )
        self._upstream_model = settings.upstream_model
        self._served_name = settings.served_model_name
        self._start_command = settings.start_command
        self._stop_command = settings.stop_command
        self._start_timeout = settings.start_timeout
        self._loaded = False
        self._inflight: collections.Counter[str] = collections.Counter()
        self._pumps: set[asyncio.Task[None]] = set()  # each stream's reader

    # ------------------------------------------------------------------ model
    @property
    def model_id(self) -> str:
        return self._served_name or self._upstream_model or "upstream"

    @property
    def upstream_model(self) -> str:
        """The model name sent upstream."""
        return self._upstream_model or self.model_id

    @property
    def loaded(self) -> bool:
        return self._loaded

    @property
    def ready(self) -> bool:
        return self._loaded and self.pool.any_healthy

    @property
    def engine_name(self) -> str:
        return "openai"

    @property
    def lifecycle_refusal(self) -> str | None:
        if self._start_command and self._stop_command:
            return None
        return (
            "This server's upstreams are always on: nothing here can start or stop them. Give "
            "`ncompass serve --start-command CMD --stop-command CMD` (e.g. `docker start vllm`, `kubectl "
            "scale ...`) to let the deployment lifecycle drive them."
        )

    @property
    def _http(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                headers=self._headers,
                timeout=aiohttp.ClientTimeout(
                    total=None, sock_connect=_CONNECT_TIMEOUT, sock_read=self._timeout
                ),
                connector=aiohttp.TCPConnector(limit=0, limit_per_host=0),
            )
            self.pool.client = self._session
        return self._session

    async def load(self, tenant_id: str | None = None) -> None:
        """Run ``--start-command`` (if any), then wait for a healthy replica (``--start-timeout``)."""
        self._http  # noqa: B018 - the HTTP session, made on the loop the runtime serves from
        if self._start_command:
            await self._run_command("start", self._start_command, tenant_id)
        if not await self.pool.wait_healthy(self._start_timeout):
            why = "; ".join(f"{r.base_url}: {r.last_error}" for r in self.pool.replicas)
            await self.pool.close()
            raise RuntimeError(
                f"No upstream answered healthy within {self._start_timeout:g} s ({self._scrub(why)}). Check "
                "the --upstream URLs and that the servers are up, or raise --start-timeout."
            )
        if self._upstream_model is None:
            self._upstream_model = await self._first_model()
        self._loaded = True

    async def unload(self, tenant_id: str | None = None) -> None:
        """End every forwarded stream with :class:`ModelUnavailableError`; run ``--stop-command``."""
        self._loaded = False
        for pump in list(self._pumps):
            pump.cancel()
        await self.pool.close()
        if self._stop_command:
            try:
                await self._run_command("stop", self._stop_command, tenant_id)
            except RuntimeError as exc:  # the deployment is stopped for its tenants either way
                logger.warning("%s", exc)

    async def aclose(self) -> None:
        if self._loaded:
            await self.unload()
        await self.pool.close()
        if self._session is not None:
            await self._session.close()

    def inflight(self, tenant: str) -> int:
        return self._inflight[tenant]

    def upstreams(self) -> list[tuple[str, bool, float | None, int]]:
        return [(r.base_url, r.healthy, r.latency, r.outstanding) for r in self.pool.replicas]

    def requests_by_tenant(self) -> dict[str, tuple[int, int]]:
        # Nothing waits here: the upstream queues and batches what it is sent.
        return {tenant: (n, 0) for tenant, n in self._inflight.items() if n}

    # ------------------------------------------------------------- forwarding
    async def forward(
        self,
        tenant: str,
        path: str,
        body: dict[str, Any],
        choices: int,
        check: AnswerCheck | None = None,
        events: ResponseEvents | None = None,
        calls_check: CallsCheck | None = None,
        streamed: bool = True,
    ) -> GenerationStream:
        """Send ``body`` to ``path`` of a replica; its events, once the upstream answered 200.

        ``check``: each choice is held back until it ends, and one that ends on its own (``stop``) is
        sent only if ``check(text)`` finds nothing wrong (else an :class:`UpstreamError` ends the stream).
        ``calls_check``: likewise, each choice's tool calls are held back until it ends, and sent only
        if ``calls_check(calls, finish_reason)`` finds nothing wrong.
        ``events``: the reader of a Responses API stream (``/responses``); without it the upstream's
        chunks are chat's or completions' (by ``path``).
        ``streamed``: False when ``body`` asks for a whole answer (chat's or completions'), read at once.

        Raises:
            QueueFullError: the tenant has ``max_queue_per_key`` requests in flight.
            ModelUnavailableError: the runtime is not loaded (its deployment was stopped).
            ModelNotRunning: no replica is healthy now (503 ``model_starting``, retry after a probe).
            UpstreamError: the upstream refused the request, or no replica could be reached.
        """
        if not self._loaded:
            raise ModelUnavailableError("The upstream is stopped.")
        if self._inflight[tenant] >= self.max_queue_per_key:
            raise QueueFullError(1, self.max_queue_per_key)
        self._inflight[tenant] += 1
        try:
            replica, response = await self._open(path, body, streamed)
        except BaseException:
            self._release(tenant)
            raise
        loop = asyncio.get_running_loop()
        sink = LoopSink(loop)
        stream = GenerationStream(sink, [0], choices)
        chat = path == "/chat/completions"
        read = _Reading(sink, stream, chat, check, "tools" in body, events, calls_check)
        pump = loop.create_task(
            self._relaying(
                self._pump(response, read) if streamed else self._take_whole(response, read),
                replica,
                response,
                sink,
                streamed,
            )
        )
        self._pumps.add(pump)

        def finished(task: asyncio.Task[None]) -> None:
            # Here, not in the coroutine: a task cancelled before its first step never runs its finally.
            self._pumps.discard(task)
            replica.outstanding -= 1
            self._release(tenant)
            response.close()  # a no-op after the reader released it; else the upstream request ends here

        pump.add_done_callback(finished)
        stream._cancel = lambda: _cancel(pump)
        # A stream dropped without being closed still closes its upstream request.
        fin = weakref.finalize(stream, _cancel, pump)
        fin.atexit = False
        return stream

    async def _open(
        self, path: str, body: dict[str, Any], streamed: bool = True
    ) -> tuple[Replica, aiohttp.ClientResponse]:
        """The upstream's 200; a failure before its first byte is retried once elsewhere."""
        tried: list[Replica] = []
        last: UpstreamError | None = None
        for _ in range(2):
            replica = self.pool.pick(exclude=tried)
            if replica is None:
                break
            tried.append(replica)
            replica.outstanding += 1
            try:
                response = await self._http.post(
                    replica.base_url + path,
                    data=orjson.dumps(body),
                    headers=_JSON,
                    **({} if streamed else {"timeout": self._whole}),
                )
            except _HTTP_ERRORS as exc:
                replica.outstanding -= 1
                if not streamed and isinstance(exc, aiohttp.SocketTimeoutError):
                    # Still generating: not the replica's fault, and another would start the answer over.
                    raise self._answer_late() from None
                self.pool.failed(replica, f"{type(exc).__name__} on {path}")
                if isinstance(exc, asyncio.TimeoutError):
                    waited = self._waits(streamed)
                    last = UpstreamError(f"The upstream did not answer within {waited}; retry.")
                else:
                    last = UpstreamError(f"The upstream could not be reached ({type(exc).__name__}); retry.")
                continue
            if response.status == 200:
                return replica, response
            try:
                error = self._refusal(path, response.status, await response.read(), response.headers)
            except _HTTP_ERRORS:
                error = self._refusal(path, response.status, b"", response.headers)
            finally:
                response.release()
                replica.outstanding -= 1
            if response.status >= 500 and response.status != 503:
                last = error  # maybe this replica's trouble: once more on another
                continue
            raise error
        if last is not None:
            raise last
        raise ModelNotRunning("starting", retry_after=self.pool.interval)

    def _refusal(self, path: str, status: int, raw: bytes, headers: Mapping[str, str]) -> UpstreamError:
        message, param = f"HTTP {status}", None
        with contextlib.suppress(ValueError, AttributeError, TypeError, KeyError):
            error = json.loads(raw)["error"]
            message = str(error.get("message") or message) if isinstance(error, dict) else str(error)
            found = error.get("param") if isinstance(error, dict) else None
            param = found if isinstance(found, str) else None
        if status in (401, 403):
            text = (
                f"The upstream refused this server's own key ({status}): the operator must fix "
                "--upstream-api-key. Your request was not the problem."
            )
        elif status == 404 and param is None:
            text = (
                f"The upstream has no {path} route (404: {self._scrub(message)}), though this server is set "
                "up to send it there: the operator must check --upstream and --upstream-supports."
            )
        else:
            text = f"The upstream answered {status}: {self._scrub(message)}"
        return UpstreamError(text, status=status, retry_after=headers.get("retry-after"), param=param)

    def _failure(self, error: Any, what: str) -> UpstreamError:
        """The error of an upstream's answer or event that is an ``error`` object, its message scrubbed."""
        message = error.get("message") if isinstance(error, dict) else error
        return UpstreamError(f"The upstream {what}: {self._scrub(str(message))}")

    def _answer_late(self) -> UpstreamError:
        return UpstreamError(f"The upstream's answer did not come within {self._waits(False)}.")

    def _waits(self, streamed: bool) -> str:
        """How long a read waits, and the flag that sets it."""
        if streamed:
            return f"{self._timeout:g} s (--upstream-timeout)"
        return f"{self._answer_timeout:g} s (--upstream-answer-timeout)"

    async def _relaying(
        self, read: Any, replica: Replica, response: aiohttp.ClientResponse, sink: Sink, streamed: bool
    ) -> None:
        """Run ``read`` (the upstream's answer into ``sink``), then END, or the error that ended it."""
        try:
            await read
            response.release()  # read to its end: the connection can serve another request
            sink.push(END)
        except UpstreamError as exc:
            sink.push(exc)
        except asyncio.TimeoutError:
            if streamed:
                message = f"The upstream sent nothing for {self._waits(True)}; the answer is incomplete."
                sink.push(UpstreamError(message))
            else:
                sink.push(self._answer_late())
        except aiohttp.ClientError as exc:
            self.pool.failed(replica, f"{type(exc).__name__} mid-answer")
            sink.push(UpstreamError(f"The upstream broke off its answer ({type(exc).__name__}); retry."))
        except asyncio.CancelledError:
            if not self._loaded:  # unloaded: the deployment stopped under the stream
                sink.push(ModelUnavailableError("The model was stopped before this request finished."))
            raise
        except Exception:  # an answer of an unexpected shape: the stream still ends, never hangs
            logger.exception("Reading an upstream's answer failed")
            sink.push(UpstreamError("The upstream sent an answer this server cannot read; it is incomplete."))
        finally:
            response.close()  # a no-op once released; else it ends the upstream request

    async def _pump(self, response: aiohttp.ClientResponse, read: _Reading) -> None:
        """A streamed answer: each upstream chunk's choices become events, up to ``[DONE]``."""
        parser = _SSEParser()
        async for raw in response.content.iter_any():
            for data in parser.feed(raw):
                if self._relay(data, read):
                    return
        for data in parser.close():
            if self._relay(data, read):
                return
        raise UpstreamError("The upstream ended the stream before it was complete; retry the request.")

    async def _take_whole(self, response: aiohttp.ClientResponse, read: _Reading) -> None:
        """An answer that is not streamed: each of its choices becomes the events of a stream's chunks."""
        try:
            answer = _loads(await response.read())
        except ValueError:
            raise UpstreamError("The upstream's answer is not JSON.") from None
        if isinstance(answer, dict) and "error" in answer:
            raise self._failure(answer["error"], "failed")
        if not isinstance(answer, dict) or not isinstance(answer.get("choices"), list):
            raise UpstreamError("The upstream's answer has no `choices` list.")
        take_usage(answer.get("usage"), read.stream)
        for choice in answer["choices"]:
            _take_choice(choice, read, whole=True)

    def _relay(self, data: bytes, read: _Reading) -> bool:
        """One upstream event into ``read``'s sink; True at ``[DONE]``."""
        if data == b"[DONE]":
            return True
        try:
            event = _loads(data)
        except ValueError:
            raise UpstreamError(
                "The upstream sent an event that is not JSON; the answer is incomplete."
            ) from None
        if not isinstance(event, dict):
            raise UpstreamError("The upstream sent an event that is not a JSON object.")
        if "error" in event:
            raise self._failure(event["error"], "failed mid-stream")
        if read.events is not None:
            try:
                return read.events.feed(event, read)
            except UpstreamError as exc:
                raise UpstreamError(self._scrub(exc.message)) from None
        take_usage(event.get("usage"), read.stream)
        for choice in event.get("choices") or ():
            _take_choice(choice, read, whole=False)
        return False

    def _release(self, tenant: str) -> None:
        self._inflight[tenant] -= 1
        if self._inflight[tenant] <= 0:
            del self._inflight[tenant]

    # ------------------------------------------------------------- lifecycle
    async def _first_model(self) -> str:
        replica = self.pool.pick()
        if replica is not None:
            with contextlib.suppress(*_HTTP_ERRORS, ValueError, KeyError, IndexError, TypeError):
                async with self._http.get(replica.base_url + "/models") as answer:
                    name = _loads(await answer.read())["data"][0]["id"]
                if isinstance(name, str) and name:
                    return name
        raise RuntimeError("The upstream lists no model at GET /models: name it with --upstream-model.")

    async def _run_command(self, action: str, command: str, tenant_id: str | None) -> None:
        """Run ``--start-command`` / ``--stop-command`` in a shell; RuntimeError with why when it fails."""
        env = {
            **os.environ,
            "NCOMPASS_ACTION": action,
            "NCOMPASS_MODEL": self.upstream_model,
            "NCOMPASS_TENANT": tenant_id or "",
            "NCOMPASS_UPSTREAMS": ",".join(r.base_url for r in self.pool.replicas),
        }
        env.pop("NCOMPASS_SERVER_UPSTREAM_API_KEY", None)  # the command gets no secret of ours
        # On a worker thread, not the loop's subprocess support: that needs the main thread under uvloop,
        # and a LocalServer runs its loop on another one.
        returncode, err = await asyncio.to_thread(_run_shell, command, env, self._start_timeout)
        if returncode is None:
            raise RuntimeError(
                f"--{action}-command did not finish within {self._start_timeout:g} s (--start-timeout); it "
                "was killed."
            )
        if returncode != 0:
            tail = self._scrub(err.decode("utf-8", "replace").strip()[-_STDERR_TAIL:])
            raise RuntimeError(
                f"--{action}-command exited with status {returncode}" + (f": {tail}" if tail else ".")
            )

    def _scrub(self, text: str) -> str:
        """``text`` without the upstream key (an upstream may quote the key it was sent)."""
        return text.replace(self._secret, "***") if self._secret else text


def take_usage(
    usage: Any, stream: GenerationStream, prefix: str = "prompt", completion: str = "completion"
) -> None:
    """An upstream's usage report (``None`` when it has none) counted into ``stream``: chat's and
    completions' names by default, the Responses API's with ``prefix="input", completion="output"``."""
    if not isinstance(usage, dict):
        return
    stream.prompt_token_counts = [int(usage.get(f"{prefix}_tokens") or 0)]
    stream.reported_completion_tokens = int(usage.get(f"{completion}_tokens") or 0)
    details = usage.get(f"{prefix}_tokens_details")
    if isinstance(details, dict):
        stream.cached_tokens = int(details.get("cached_tokens") or 0)


def _take_choice(choice: dict[str, Any], read: _Reading, whole: bool) -> None:
    """One choice of an upstream's chunk (``whole``: of its whole answer) into ``read``."""
    index = int(choice.get("index") or 0)
    finish = choice.get("finish_reason")
    if read.chat:
        part = choice.get("message" if whole else "delta") or {}
        calls = tuple(part.get("tool_calls") or ())
        if whole:  # a whole answer's calls have no index; a stream's deltas do
            calls = tuple({"index": k, **call} for k, call in enumerate(calls))
        if calls and not read.tools:
            raise UpstreamError("The upstream answered with tool calls, which were not asked for.")
        text = part.get("content") or ""
        tokens = parse_chat_logprobs(choice.get("logprobs"))
    else:
        text, calls = choice.get("text") or "", ()
        tokens = parse_completion_logprobs(choice.get("logprobs"))
    read.add(index, text, finish or ("stop" if whole else None), tokens, calls)


def _cancel(task: asyncio.Task[None]) -> None:
    task.cancel()


def _run_shell(command: str, env: dict[str, str], timeout: float) -> tuple[int | None, bytes]:
    """Run ``command`` in a shell; its exit status (``None``: killed at ``timeout``) and its stderr."""
    proc = subprocess.Popen(
        command,
        shell=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,  # its children are killed with it on a timeout
    )
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return None, b""
    return proc.returncode, err


class _Reading:
    """One upstream answer being read: each choice's token count, and its held-back text under a check.

    A chunk with logprobs becomes one event per token (the first with the chunk's text), as an engine's
    stream has; without them, one event per chunk, counted as one token.
    """

    def __init__(
        self,
        sink: Sink,
        stream: GenerationStream,
        chat: bool,
        check: AnswerCheck | None,
        tools: bool,
        events: ResponseEvents | None = None,
        calls_check: CallsCheck | None = None,
    ) -> None:
        self.sink, self.stream, self.chat, self.check, self.tools = sink, stream, chat, check, tools
        self.events, self.calls_check = events, calls_check
        self.held_calls: dict[int, list[dict[str, Any]]] = collections.defaultdict(list)
        self.counts: collections.Counter[int] = collections.Counter()
        self.held: dict[int, list[tuple[str, list[TokenLogprobs]]]] = collections.defaultdict(list)

    def add(
        self,
        index: int,
        text: str,
        finish: Any,
        tokens: list[TokenLogprobs],
        calls: tuple[dict[str, Any], ...],
    ) -> None:
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
            deltas = tuple({"index": k, **call} for k, call in enumerate(whole))
            self.sink.push(GenerationEvent(index, "", None, self.counts[index], tool_calls=deltas))

    def _push(self, index: int, text: str, finish: Any, tokens: list[TokenLogprobs]) -> None:
        if not tokens:
            if text:
                self.counts[index] += 1
            self.sink.push(GenerationEvent(index, text, finish, self.counts[index]))
            return
        for k, token in enumerate(tokens):
            self.counts[index] += 1
            last = k == len(tokens) - 1
            event = GenerationEvent(
                index, text if k == 0 else "", finish if last else None, self.counts[index], token
            )
            self.sink.push(event)
