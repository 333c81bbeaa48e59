"""Exceptions raised by ncompass-openai.

Every error this package raises itself derives from
[`NCompassError`][ncompass_openai._exceptions.NCompassError], which derives from ``openai.OpenAIError``,
so one ``except openai.OpenAIError`` still catches everything. HTTP failures keep openai's own status
errors (``openai.AuthenticationError``, ``openai.RateLimitError``, …).

    openai.OpenAIError
    └── NCompassError
        ├── MissingAPIKeyError          (also a ValueError)
        ├── MissingDependencyError      (also an ImportError)
        ├── ModelNotRunningError
        │   └── ModelNotRunningAPIError  (also openai.InternalServerError: a 503 answer)
        ├── DeploymentTimeoutError      (also a TimeoutError)
        ├── DeploymentFailedError
        ├── SessionError
        ├── LifecycleAPIUnavailableError (also openai.NotFoundError: the server has no nCompass routes)
        ├── BaseURLError                (also openai.NotFoundError: the base URL lacks /v1)
        └── StreamError
            └── TruncatedStreamError
"""

from __future__ import annotations

import openai

from ._compat import httpx
from ._docs import see

__all__ = [
    "BaseURLError",
    "DeploymentFailedError",
    "DeploymentTimeoutError",
    "LifecycleAPIUnavailableError",
    "MissingAPIKeyError",
    "MissingDependencyError",
    "ModelNotRunningError",
    "NCompassError",
    "ServerUnreachableError",
    "SessionError",
    "StreamError",
    "TruncatedStreamError",
]

_START_HINT = (
    "Start it with `client.deployment.start()` (or `client.deployment.ensure_running()`), "
    "or on the command line with `ncompass model start` (0.0.x: `nccli-start-model`), "
    "then check it with `ncompass model status` (0.0.x: `nccli-model-status`)."
)


class NCompassError(openai.OpenAIError):
    """The root of every error raised by ncompass-openai itself."""


class MissingAPIKeyError(NCompassError, ValueError):
    """No API key was given and none was found in the environment."""

    def __init__(self, env_var: str = "NCOMPASS_API_KEY") -> None:
        self.env_var = env_var
        super().__init__(
            f"No nCompass API key: pass `api_key=...` to the client or set the {env_var} "
            f"environment variable. {see('configuration')}"
        )


class MissingDependencyError(NCompassError, ImportError):
    """An optional dependency is not installed."""

    def __init__(self, feature: str, install: str) -> None:
        self.feature = feature
        self.install = install
        super().__init__(f"{feature} needs extra packages: run `{install}`.")


def _failure(error: str | None) -> str:
    """A failed start's error, then the one advice that helps: starting again fails the same way."""
    cause = (error or "no reason given").rstrip().rstrip(".")
    return (
        f"{cause}. Starting it again fails the same way until that is fixed (on `ncompass serve`: the "
        "--model file); then start it with `client.deployment.start()` or `ncompass model start`."
    )


class ModelNotRunningError(NCompassError):
    """The model deployment is stopped (or stopping), so it cannot answer."""

    def __init__(
        self, state: str = "stopped", detail: str | None = None, *, error: str | None = None
    ) -> None:
        self.state = state
        self.error = error
        if state == "failed":
            message = f"The model is not running (state: failed); its last start failed: {_failure(error)}"
        else:
            message = f"The model is not running (state: {state}). {_START_HINT}"
        if detail:
            message = f"{message} Server said: {detail}"
        super().__init__(message)


class DeploymentTimeoutError(NCompassError, TimeoutError):
    """The model did not become ready before the deadline."""

    def __init__(self, timeout: float, state: str | None = None) -> None:
        self.timeout = timeout
        self.state = state
        seen = f" (last state: {state})" if state else ""
        super().__init__(
            f"The model was not running after {timeout:g} s{seen}. Cold starts take minutes: wait "
            "longer (a larger `timeout=`). If it is stopped, start it with "
            "`client.deployment.start()` or `ncompass model start` (0.0.x: `nccli-start-model`), "
            f"and check it with `ncompass model status` (0.0.x: `nccli-model-status`). {see('cold starts')}"
        )


class DeploymentFailedError(NCompassError):
    """The model deployment failed to start."""

    def __init__(self, error: str | None) -> None:
        self.error = error
        super().__init__(f"The model deployment failed to start: {_failure(error)}")


class SessionError(NCompassError):
    """A session could not be started, found or stopped."""


class LifecycleAPIUnavailableError(NCompassError, openai.NotFoundError):
    """A lifecycle route (sessions, deployment, bookings) answered 404: the server does not have it.

    Either the server speaks OpenAI's API but not nCompass's lifecycle API (``suggested_base_url`` is
    ``None``), or the base URL lacks ``/v1`` (``suggested_base_url`` is the URL that answers).
    """

    def __init__(
        self,
        *,
        base_url: str,
        path: str,
        suggested_base_url: str | None,
        response: httpx.Response,
        body: object,
    ) -> None:
        self.base_url = base_url
        self.path = path
        self.suggested_base_url = suggested_base_url
        if suggested_base_url is not None:
            message = (
                f"The base URL {base_url} lacks `/v1`: `{path}` answered 404 there, but "
                f"{suggested_base_url}{path} answers. Set NCOMPASS_BASE_URL (or `base_url=`, "
                f"`--base-url`) to {suggested_base_url}."
            )
        else:
            message = (
                f"The server at {base_url} does not have nCompass's lifecycle API (`{path}` answered 404): "
                "it may speak OpenAI's API, but it has no sessions, deployment or bookings. Point "
                "NCOMPASS_BASE_URL (or `base_url=`, `--base-url`) at nCompass or at `ncompass serve`, or "
                "use only the OpenAI calls (chat.completions, completions, models) with this server. "
                + see("plain servers")
            )
        openai.NotFoundError.__init__(self, message, response=response, body=body)


class BaseURLError(NCompassError, openai.NotFoundError):
    """An OpenAI route (``/models``, ``/chat/completions``) answered 404 because the base URL lacks ``/v1``.

    ``suggested_base_url`` is the URL that answers.
    """

    def __init__(
        self, *, base_url: str, path: str, suggested_base_url: str, response: httpx.Response, body: object
    ) -> None:
        self.base_url = base_url
        self.path = path
        self.suggested_base_url = suggested_base_url
        message = (
            f"The base URL {base_url} lacks `/v1`: `{path}` answered 404 there, but "
            f"{suggested_base_url}{path} answers. Set NCOMPASS_BASE_URL (or `base_url=`, `--base-url`) to "
            f"{suggested_base_url}."
        )
        openai.NotFoundError.__init__(self, message, response=response, body=body)


class ServerUnreachableError(NCompassError, openai.APIConnectionError):
    """No connection to the server could be made; the message names the URL tried and the fix.

    A refused connection to a loopback address (nothing listens there: ``ncompass serve`` is not running)
    is raised at once, without openai's retries; other connection errors after them, as openai's are.
    """

    def __init__(self, *, request: httpx.Request, reason: str) -> None:
        url = request.url
        self.url = f"{url.scheme}://{url.netloc.decode('ascii', 'replace')}{url.path}"
        message = (
            f"Could not reach {self.url}: {reason}. Check that the server is running and that "
            "NCOMPASS_BASE_URL (or `base_url=`, `--base-url`) points at it."
        )
        openai.APIConnectionError.__init__(self, message=message, request=request)


class StreamError(NCompassError):
    """A streamed response failed after it had begun."""


class TruncatedStreamError(StreamError):
    """A stream ended before the server's final ``[DONE]`` event: the answer is incomplete."""

    def __init__(self) -> None:
        super().__init__(
            "The stream ended before the server sent [DONE]: the answer is incomplete. The "
            "connection was probably cut; retry the request."
        )


# Tracebacks name an error by its module: show the public one (`ncompass_openai.SessionError`), where
# users import it from, not this private module.
for _error in (
    NCompassError,
    MissingAPIKeyError,
    MissingDependencyError,
    ModelNotRunningError,
    DeploymentTimeoutError,
    DeploymentFailedError,
    SessionError,
    LifecycleAPIUnavailableError,
    BaseURLError,
    ServerUnreachableError,
    StreamError,
    TruncatedStreamError,
):
    _error.__module__ = "ncompass_openai"
