"""Connection errors that name the URL tried, and a refused loopback connection reported at once.

openai answers every failed connection with a bare ``Connection error.`` after its retries (4 by
default: about 7 s). A refused connection to a loopback address means nothing listens there (the local
server is not running), which no retry within seconds changes, so it fails at once; every other
connection error keeps openai's retries and then names the URL.
"""

from __future__ import annotations

import ipaddress

import openai

from ._compat import httpx
from ._exceptions import ServerUnreachableError

__all__ = ["REFUSED", "named", "refused_on_loopback"]


def _refused(exc: BaseException | None) -> bool:
    seen = 0
    while exc is not None and seen < 8:  # the transport's ConnectionRefusedError, a few causes down
        if isinstance(exc, ConnectionRefusedError):
            return True
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return False


def _loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def refused_on_loopback(request: httpx.Request, exc: BaseException) -> bool:
    """Whether ``exc`` is a refused connection to a loopback host."""
    return isinstance(exc, httpx.ConnectError) and _loopback(request.url.host) and _refused(exc)


REFUSED = "the connection was refused"


def named(exc: openai.APIConnectionError) -> openai.APIConnectionError:
    """openai's bare connection error as one naming the URL; timeouts and this package's as they are."""
    if type(exc) is not openai.APIConnectionError:
        return exc
    cause = exc.__cause__
    if _refused(cause):
        reason = REFUSED
    elif cause is not None and str(cause):
        reason = f"the connection failed ({type(cause).__name__}: {str(cause).rstrip('.')})"
    else:
        reason = "the connection failed"
    return ServerUnreachableError(request=exc.request, reason=reason)
