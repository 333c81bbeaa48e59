"""``--start-command`` / ``--stop-command``: the shell commands that let the lifecycle drive the upstreams.

Each runs in a shell with ``NCOMPASS_ACTION`` (``start``/``stop``), ``NCOMPASS_MODEL``, ``NCOMPASS_TENANT``
and ``NCOMPASS_UPSTREAMS`` set, and no secret of the server's; it is killed with its children at
``--start-timeout``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Callable

__all__ = ["run_command"]

_STDERR_TAIL = 2000  # characters of a failed command's stderr kept in the deployment's error


async def run_command(
    action: str,
    command: str,
    *,
    model: str,
    tenant_id: str | None,
    upstreams: list[str],
    timeout: float,
    scrub: Callable[[str], str],
) -> None:
    """Run ``command`` for ``action``; RuntimeError with why when it fails (``scrub`` cleans its stderr)."""
    env = {
        **os.environ,
        "NCOMPASS_ACTION": action,
        "NCOMPASS_MODEL": model,
        "NCOMPASS_TENANT": tenant_id or "",
        "NCOMPASS_UPSTREAMS": ",".join(upstreams),
    }
    env.pop("NCOMPASS_SERVER_UPSTREAM_API_KEY", None)  # the command gets no secret of ours
    # On a worker thread, not the loop's subprocess support: that needs the main thread under uvloop,
    # and a LocalServer runs its loop on another one.
    returncode, err = await asyncio.to_thread(_run_shell, command, env, timeout)
    if returncode is None:
        raise RuntimeError(
            f"--{action}-command did not finish within {timeout:g} s (--start-timeout); it was killed."
        )
    if returncode != 0:
        tail = scrub(err.decode("utf-8", "replace").strip()[-_STDERR_TAIL:])
        raise RuntimeError(
            f"--{action}-command exited with status {returncode}" + (f": {tail}" if tail else ".")
        )


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
