"""The 0.0.x entry points: ``nCompass`` (the client under its old name) and the ``nCompassOLOC`` one-liners.

``nCompassOLOC`` keeps one client per API key for the whole process, so that
``nCompassOLOC().complete_prompt(key, prompt)`` does not pay for a new client (and connection) on every
line. Unlike 0.0.x it is thread safe: each key's client is made once under a lock, two keys never share
one, and a client that ``stop_session`` retires is closed only when the last call still using it (a
stream being read included) is done. Whatever is left is closed at interpreter exit.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from ._client import NCompass
from ._legacy import Sampling, plan_chat, plan_completion, print_pieces
from ._legacy_defaults import DEFAULT_MAX_TOKENS, DEFAULT_TEMPERATURE, DEFAULT_TOP_P
from ._streaming import TextStream
from .types import Session

__all__ = ["nCompass", "nCompassOLOC"]


class nCompass(NCompass):
    """The nCompass client under its 0.0.x name, taking the 0.0.x constructor arguments positionally too."""

    def __init__(self, api_key: str | None = None, custom_env_var: str | None = None, **kwargs: Any) -> None:
        """Creates a client; the key is ``api_key``, else ``$custom_env_var``, else ``$NCOMPASS_API_KEY``.

        Args:
            api_key: the nCompass API key.
            custom_env_var: the name of an environment variable holding the key (not with ``api_key``).
            **kwargs: any other :class:`NCompass` argument (``base_url``, ``model``, ``timeout``, …).
        """
        super().__init__(api_key=api_key, custom_env_var=custom_env_var, **kwargs)


class _Entry:
    __slots__ = ("client", "closed", "retired", "users")

    def __init__(self, client: NCompass) -> None:
        self.client = client
        self.users = 0
        self.retired = False
        self.closed = False


def _fingerprint(api_key: object) -> bytes:
    # The registry is keyed by a digest, so no structure of this module ever holds a key in the clear
    # (beyond the client itself).
    if not isinstance(api_key, str) or not api_key.strip():
        raise ValueError("api_key must be a non-empty string: the nCompass API key to use.")
    return hashlib.sha256(api_key.encode()).digest()


class nCompassOLOC:
    """One-line-of-code access: every method takes the API key first and keeps one client per key.

    Thread safe; the methods are class methods, so ``nCompassOLOC().start_session(key)`` and
    ``nCompassOLOC.start_session(key)`` are the same call.
    """

    _lock = threading.Lock()
    _entries: dict[bytes, _Entry] = {}  # noqa: RUF012 - process-wide on purpose
    _atexit_registered = False

    # -- the per-key client registry ---------------------------------------------------------------

    @classmethod
    def _acquire(cls, api_key: str) -> _Entry:
        fingerprint = _fingerprint(api_key)
        with cls._lock:
            entry = cls._entries.get(fingerprint)
            if entry is None:
                entry = _Entry(nCompass(api_key=api_key))
                cls._entries[fingerprint] = entry
                if not cls._atexit_registered:
                    atexit.register(cls.close_all)
                    cls._atexit_registered = True
            entry.users += 1
            return entry

    @classmethod
    def _release(cls, entry: _Entry) -> None:
        with cls._lock:
            entry.users -= 1
            close = entry.retired and entry.users == 0 and not entry.closed
            if close:
                entry.closed = True
        if close:
            entry.client.close()

    @classmethod
    @contextlib.contextmanager
    def _using(cls, api_key: str) -> Iterator[_Entry]:
        entry = cls._acquire(api_key)
        try:
            yield entry
        finally:
            cls._release(entry)

    @classmethod
    def _complete(
        cls,
        api_key: str,
        stream: bool,
        pprint: bool,
        call: Callable[[NCompass, Callable[[], None] | None], TextStream | str | list[str]],
    ) -> TextStream | str | list[str] | None:
        """Runs ``call(client, on_close)``; a stream keeps the key's client in use until it is closed."""
        if not stream:
            with cls._using(api_key) as entry:
                return call(entry.client, None)
        entry = cls._acquire(api_key)
        try:
            result = call(entry.client, lambda: cls._release(entry))
        except BaseException:
            cls._release(entry)
            raise
        return cls._maybe_print(result, pprint)

    @classmethod
    def _retire(cls, api_key: str, entry: _Entry) -> None:
        with cls._lock:
            fingerprint = _fingerprint(api_key)
            if cls._entries.get(fingerprint) is entry:
                del cls._entries[fingerprint]
            entry.retired = True

    @classmethod
    def close_all(cls) -> None:
        """Closes every client the one-liners hold (run at interpreter exit; later calls make new ones)."""
        with cls._lock:
            entries = list(cls._entries.values())
            cls._entries.clear()
            for entry in entries:
                entry.retired = True
                entry.closed = True
        for entry in entries:
            entry.client.close()

    # -- the 0.0.x one-liners ----------------------------------------------------------------------

    @classmethod
    def start_session(cls, api_key: str, *, timeout: float = 20.0, start_model: bool = False) -> Session:
        """Starts a time-billed session for ``api_key`` and waits until its model is running.

        Args:
            api_key: the nCompass API key.
            timeout: seconds to wait for the model (a stopped one fails at once, billing nothing).
            start_model: start a stopped model first, then wait for it.
        """
        with cls._using(api_key) as entry:
            return entry.client.start_session(timeout=timeout, start_model=start_model)

    @classmethod
    def stop_session(cls, api_key: str) -> bool:
        """Stops ``api_key``'s session (returns True) and retires its client.

        Args:
            api_key: the nCompass API key.
        """
        with cls._using(api_key) as entry:
            try:
                return entry.client.stop_session()
            finally:
                cls._retire(api_key, entry)

    @classmethod
    def model_is_running(cls, api_key: str) -> bool:
        """True when ``api_key``'s model can answer now.

        Args:
            api_key: the nCompass API key.
        """
        with cls._using(api_key) as entry:
            return entry.client.model_is_running()

    @classmethod
    def wait_until_model_running(cls, api_key: str, timeout: float = 20.0) -> None:
        """Blocks until ``api_key``'s model is running.

        Args:
            api_key: the nCompass API key.
            timeout: seconds to wait before raising
                [`DeploymentTimeoutError`][ncompass_openai._exceptions.DeploymentTimeoutError].
        """
        with cls._using(api_key) as entry:
            entry.client.wait_until_model_running(timeout=timeout)

    @classmethod
    def complete_prompt(
        cls,
        api_key: str,
        prompt: str | Sequence[str],
        max_tokens: int | None = DEFAULT_MAX_TOKENS,
        temperature: float | None = DEFAULT_TEMPERATURE,
        top_p: float | None = DEFAULT_TOP_P,
        stream: bool = True,
        pprint: bool = False,
        **params: Any,
    ) -> TextStream | str | list[str] | None:
        """Completes a prompt with ``api_key``'s model.

        Args:
            api_key: the nCompass API key.
            prompt: the text to complete, or a list of texts (a batch, with ``stream=False``).
            max_tokens: the most tokens to generate (≥ 1).
            temperature: sampling temperature, in [0, 2].
            top_p: nucleus sampling mass, in (0, 1].
            stream: True streams text pieces, False returns the finished text (or list of texts).
            pprint: with ``stream=True``, print the pieces as they arrive and return None.
            **params: any other openai or vLLM parameter (see `NCompass.complete_prompt`).
        """
        plan = plan_completion(prompt, Sampling(max_tokens, temperature, top_p), stream, params)
        return cls._complete(
            api_key, stream, pprint, lambda client, on_close: client._complete_prompt(plan, on_close)
        )

    @classmethod
    def complete_chat(
        cls,
        api_key: str,
        messages: Sequence[Mapping[str, Any]] | Sequence[Sequence[Mapping[str, Any]]],
        add_generation_prompt: bool = True,
        chat_template: str | None = None,
        max_tokens: int | None = DEFAULT_MAX_TOKENS,
        temperature: float | None = DEFAULT_TEMPERATURE,
        top_p: float | None = DEFAULT_TOP_P,
        stream: bool = True,
        pprint: bool = False,
        **params: Any,
    ) -> TextStream | str | list[str] | None:
        """Answers a conversation with ``api_key``'s model.

        Args:
            api_key: the nCompass API key.
            messages: ``{"role", "content"}`` messages, or a list of such lists (a batch, with
                ``stream=False``).
            add_generation_prompt: end the rendered prompt with the assistant's turn opener.
            chat_template: a Jinja chat template; None uses the model's own.
            max_tokens: the most tokens to generate (≥ 1).
            temperature: sampling temperature, in [0, 2].
            top_p: nucleus sampling mass, in (0, 1].
            stream: True streams text pieces, False returns the finished text (or list).
            pprint: with ``stream=True``, print the pieces as they arrive and return None.
            **params: any other openai or vLLM parameter (see `NCompass.complete_chat`).
        """
        values = Sampling(max_tokens, temperature, top_p)
        plan = plan_chat(messages, add_generation_prompt, chat_template, values, stream, params)
        return cls._complete(
            api_key, stream, pprint, lambda client, on_close: client._complete_chat(plan, on_close)
        )

    @staticmethod
    def _maybe_print(
        result: TextStream | str | list[str], pprint: bool
    ) -> TextStream | str | list[str] | None:
        if not pprint or not isinstance(result, TextStream):
            return result
        with result:
            print_pieces(result)
        return None

    @staticmethod
    def print_response(response_iterator: Iterable[str]) -> None:
        """Prints each text piece as it arrives (flushed), then a newline.

        Args:
            response_iterator: the stream returned with ``stream=True, pprint=False`` (or a text).
        """
        if isinstance(response_iterator, str):
            response_iterator = (response_iterator,)
        print_pieces(response_iterator)
