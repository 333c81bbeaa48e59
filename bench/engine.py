"""The llama engine against llama.cpp's own server and llama-cpp-python's, on the same GGUF and threads.

Three servers run side by side, each in its own process, on the bundled SmolLM2-135M GGUF:

- ``ncompass serve`` (``python -m ncompass_openai.server``, llama engine, 8 sequences per batch);
- ``llama-server -c 16384 -np 8``: llama.cpp's C++ server with 8 parallel slots, built once from the
  llama.cpp sources vendored in the llama-cpp-python sdist of the installed version (CPU, Release; cached
  in the user's cache directory, outside the repository);
- ``python -m llama_cpp.server``: llama-cpp-python's own OpenAI server (one request at a time; started
  with ``--interrupt_requests false``, else a new request ends the stream in progress).

Each workload runs on each server in interleaved rounds, the order reversed every other round (A, B, C,
C, B, A, ...), so machine noise and order hit all of them alike; the report gives medians and ratios to
``llama-server``. The one stream, short and the noisiest, runs three times per server per round. Every
chat is greedy.

1. 8 concurrent chats x 32 tokens: wall time and aggregate tokens/s (goal: ncompass <= 1.2x llama-server's
   wall time);
2. one stream of 128 tokens: tokens/s after the first token, and the time to it (goal: ncompass >= 0.9x
   llama-server's tok/s);
3. 32 concurrent streamed chats x 32 tokens (queueing past the slots): wall time, max time to first token,
   and whether every request progressed;
4. the same three with a JSON-schema ``response_format``.

Reads no environment variables; writes the report to stdout and to bench/results/engine.txt.

    python bench/engine.py [--rounds 3] [--threads 2] [--only ncompass,llama-server]
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.metadata
import json
import os
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import platformdirs
from client import KEY, Report, free_port  # bench/client.py: the same key

from ncompass_openai._compat import httpx
from ncompass_openai.server.engines.llama import default_model_path, repack_is_safe
from server import QUESTIONS  # bench/server.py: the same 8 chats

RESULT = Path(__file__).resolve().parent / "results" / "engine.txt"
SLOTS = 8
STREAM_REPEATS = 3  # one stream per server per round, this many times: its median is the noisiest
STORY = "Write a long story about a dragon who learns to read."
PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "age": {"type": "integer", "minimum": 0, "maximum": 120},
        "city": {"type": "string", "maxLength": 40},
        "hobbies": {"type": "array", "items": {"type": "string", "maxLength": 30}, "maxItems": 8},
    },
    "required": ["name", "age", "city", "hobbies"],
    "additionalProperties": False,
}


# ------------------------------------------------------------------------------------- llama-server
def llama_server_binary(say: Any) -> tuple[Path, str]:
    """``llama-server`` of the installed llama-cpp-python's vendored llama.cpp: cached, else built."""
    version = importlib.metadata.version("llama_cpp_python")
    home = Path(platformdirs.user_cache_dir("ncompass-openai", appauthor=False)) / f"llama-server-{version}"
    binary, stamp = home / "llama-server", home / "build.json"
    if binary.is_file() and stamp.is_file():
        built = json.loads(stamp.read_text())
        return binary, f"cached in {home} (built in {built['seconds']:.0f} s on {built['cores']} cores)"
    say(f"building llama-server from the llama-cpp-python {version} sdist (once; minutes) ...")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                f"llama-cpp-python=={version}",
                "--no-binary",
                ":all:",
                "--no-deps",
                "--quiet",
                "-d",
                tmp,
            ],
            check=True,
        )
        (sdist,) = Path(tmp).glob("*.tar.gz")
        with tarfile.open(sdist) as archive:
            members = [m for m in archive.getmembers() if "/vendor/llama.cpp/" in m.name]
            archive.extractall(tmp, members=members, filter="data")
        (source,) = Path(tmp).glob("*/vendor/llama.cpp")
        build = Path(tmp) / "build"
        flags = ["-DCMAKE_BUILD_TYPE=Release", "-DBUILD_SHARED_LIBS=OFF", "-DGGML_NATIVE=ON"]
        flags += ["-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_SERVER=ON"]
        flags += ["-DLLAMA_BUILD_APP=OFF", "-DLLAMA_OPENSSL=OFF", "-DLLAMA_BUILD_UI=OFF"]
        flags += ["-DLLAMA_USE_PREBUILT_UI=OFF"]  # it would download the web UI
        generator = ["-G", "Ninja"] if shutil.which("ninja") else []
        quiet: dict[str, Any] = {"check": True, "stdout": subprocess.DEVNULL}
        subprocess.run(["cmake", "-S", str(source), "-B", str(build), *generator, *flags], **quiet)
        jobs = str(os.cpu_count() or 1)
        subprocess.run(["cmake", "--build", str(build), "--target", "llama-server", "-j", jobs], **quiet)
        home.mkdir(parents=True, exist_ok=True)
        shutil.copy2(build / "bin" / "llama-server", binary)
    seconds = time.perf_counter() - started
    stamp.write_text(json.dumps({"seconds": seconds, "cores": os.cpu_count(), "version": version}))
    return binary, f"built in {seconds:.0f} s on {os.cpu_count()} cores, cached in {home}"


# ------------------------------------------------------------------------------------------ servers
@dataclass
class Server:
    name: str
    base_url: str
    model: str
    schema_format: str  # how this server is asked for a JSON schema: "json_schema" or "json_object"
    client: openai.AsyncOpenAI
    log: Path  # its stdout and stderr


@contextmanager
def running_process(
    name: str, cmd: list[str], port: int, log: Path, env: dict[str, str], key: str = KEY
) -> Iterator[str]:
    """``cmd`` as a process, its output to ``log``, until the block ends; yields its base URL once its
    ``GET /v1/models`` answers (``key`` its key). Terminated (killed after 30 s) at the end."""
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + 300
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                answer = httpx.get(url + "/models", headers={"Authorization": f"Bearer {key}"}, timeout=2)
                if answer.status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not answer in 300 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_until_running(url: str, key: str = KEY) -> None:
    """The nCompass server answers before its model is loaded: wait for ``GET /v1/deployment``'s ready."""
    deadline = time.monotonic() + 300
    while not httpx.get(url + "/deployment", headers={"Authorization": f"Bearer {key}"}).json()["ready"]:
        if time.monotonic() > deadline:
            raise RuntimeError("the nCompass server's model did not start in 300 s")
        time.sleep(0.2)


def start_servers(stack: ExitStack, names: list[str], threads: int, tmp: Path, say: Any) -> list[Server]:
    gguf = str(default_model_path())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NCOMPASS_", "OPENAI_"))}
    commands: dict[str, tuple[list[str], str]] = {}
    port = {name: free_port() for name in names}
    if "ncompass" in names:
        cmd = [sys.executable, "-m", "ncompass_openai.server", "--engine", "llama", "--model", gguf]
        cmd += ["--port", str(port["ncompass"]), "--threads", str(threads), "--api-key", KEY]
        cmd += ["--db", str(tmp / "ledger.db"), "--log-level", "warning", "--max-queue-per-key", "64"]
        commands["ncompass"] = (cmd, "json_schema")
    if "llama-server" in names:
        binary, how = llama_server_binary(say)
        say(f"llama-server: {how}")
        cmd = [str(binary), "-m", gguf, "-c", str(2048 * SLOTS), "-np", str(SLOTS), "-t", str(threads)]
        cmd += ["--host", "127.0.0.1", "--port", str(port["llama-server"]), "--no-webui"]
        if not repack_is_safe():  # as the llama engine: llama.cpp's AMX kernels crash on the first prompt
            cmd += ["--no-repack"]
        commands["llama-server"] = (cmd, "json_schema")
    if "llama_cpp.server" in names:
        launcher = Path(__file__).parents[1] / "tests" / "_llama_cpp_server.py"  # repacking off as ours
        cmd = [sys.executable, str(launcher), "--model", gguf, "--n_ctx", "2048"]
        cmd += ["--n_threads", str(threads), "--n_threads_batch", str(threads)]
        cmd += ["--host", "127.0.0.1", "--port", str(port["llama_cpp.server"])]
        # By default a new request ends the stream in progress; queue instead, as the other two do.
        cmd += ["--interrupt_requests", "false"]
        commands["llama_cpp.server"] = (cmd, "json_object")
    servers = []
    for name in names:
        cmd, schema_format = commands[name]
        url = stack.enter_context(running_process(name, cmd, port[name], tmp / f"{name}.log", env))
        if name == "ncompass":
            wait_until_running(url)
        http = httpx.AsyncClient(timeout=httpx.Timeout(600.0), limits=httpx.Limits(max_connections=64))
        client = openai.AsyncOpenAI(base_url=url, api_key=KEY, max_retries=0, http_client=http)
        model = httpx.get(url + "/models", headers={"Authorization": f"Bearer {KEY}"}).json()["data"][0]["id"]
        servers.append(Server(name, url, model, schema_format, client, tmp / f"{name}.log"))
    return servers


# ---------------------------------------------------------------------------------------- workloads
def _format(server: Server, schema: bool) -> dict[str, Any]:
    if not schema:
        return {}
    if server.schema_format == "json_object":  # llama-cpp-python's dialect for the same constraint
        return {"response_format": {"type": "json_object", "schema": PERSON}}
    return {"response_format": {"type": "json_schema", "json_schema": {"name": "person", "schema": PERSON}}}


def _messages(i: int, schema: bool) -> list[dict[str, str]]:
    question = QUESTIONS[i % len(QUESTIONS)]
    if schema:
        question = f"Invent a person who likes this: {question} Answer as JSON."
    return [{"role": "user", "content": question}]


async def _chat(server: Server, i: int, tokens: int, schema: bool) -> int:
    answer = await server.client.chat.completions.create(
        model=server.model,
        messages=_messages(i, schema),
        max_tokens=tokens,
        temperature=0,  # type: ignore[arg-type]
        **_format(server, schema),
    )
    return answer.usage.completion_tokens if answer.usage else 0


@dataclass
class Streamed:
    first: float  # seconds to the first content token
    done: float  # seconds to the end of the stream
    tokens: int


async def _stream(server: Server, messages: list[dict[str, str]], tokens: int, schema: bool) -> Streamed:
    started = time.perf_counter()
    first, pieces, usage = 0.0, 0, 0
    stream = await server.client.chat.completions.create(
        model=server.model,
        messages=messages,
        max_tokens=tokens,
        temperature=0,
        stream=True,  # type: ignore[arg-type]
        stream_options={"include_usage": True},
        **_format(server, schema),
    )
    async for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage.completion_tokens
        if chunk.choices and chunk.choices[0].delta.content:
            pieces += 1
            if not first:
                first = time.perf_counter() - started
    return Streamed(first, time.perf_counter() - started, usage or pieces)


async def concurrent_chats(server: Server, count: int, tokens: int, schema: bool) -> dict[str, float]:
    started = time.perf_counter()
    done = await asyncio.gather(*(_chat(server, i, tokens, schema) for i in range(count)))
    wall = time.perf_counter() - started
    return {"wall": wall, "tokens": sum(done), "tok_s": sum(done) / wall}


async def one_stream(server: Server, tokens: int, schema: bool) -> dict[str, float]:
    messages = [{"role": "user", "content": STORY if not schema else f"{STORY} Answer as JSON."}]
    run = await _stream(server, messages, tokens, schema)
    # The decode rate: tokens after the first over the time after it (the first one is the TTFT's).
    return {"tok_s": (run.tokens - 1) / (run.done - run.first), "ttft": run.first, "tokens": run.tokens}


async def concurrent_streams(server: Server, count: int, tokens: int, schema: bool) -> dict[str, float]:
    started = time.perf_counter()
    streams = (_stream(server, _messages(i, schema), tokens, schema) for i in range(count))
    runs = await asyncio.gather(*streams)
    return {
        "wall": time.perf_counter() - started,
        "max_ttft": max(r.first for r in runs),
        "progressed": float(all(r.first > 0 and r.tokens > 0 for r in runs)),
        "tokens": sum(r.tokens for r in runs),
    }


# ------------------------------------------------------------------------------------------- report
def _median(runs: list[dict[str, float]], key: str) -> float:
    return statistics.median(r[key] for r in runs)


async def measure(servers: list[Server], rounds: int, schema: bool, say: Any) -> dict[str, Any]:
    """Every workload on every server, interleaved; the medians per server."""
    workloads = {
        "8x32": lambda s: concurrent_chats(s, SLOTS, 32, schema),
        "stream": lambda s: one_stream(s, 128, schema),
        "32x32": lambda s: concurrent_streams(s, 32, 32, schema),
    }
    for server in servers:  # warm-up: first-call allocations, the schema's compilation
        await concurrent_chats(server, 2, 4, schema)
    results: dict[str, dict[str, list[dict[str, float]]]] = {
        w: {s.name: [] for s in servers} for w in workloads
    }
    for number in range(rounds):
        order = servers if number % 2 == 0 else servers[::-1]
        for workload, run in workloads.items():
            for server in order:
                for _ in range(STREAM_REPEATS if workload == "stream" else 1):
                    try:
                        results[workload][server.name].append(await run(server))
                    except openai.APIConnectionError as exc:  # say whose, and what its log says
                        tail = server.log.read_text(errors="replace")[-3000:]
                        whose = f"{server.name} ({workload}): {exc!r}"
                        raise RuntimeError(f"{whose}; its log ends:\n{tail}") from exc
        say(f"   round {number + 1}/{rounds} done")
    return results


def _ratio_rows(
    say: Any, runs: dict[str, Any], names: list[str], ref: str, main: tuple[str, str], other: tuple[str, str]
) -> list[tuple[str, float]]:
    """One row per server: the medians of ``main`` and ``other`` (key, format), tokens, and ``main``'s
    ratio to ``ref``'s; returns (server, ratio) pairs."""
    (key, fmt), (second, second_fmt) = main, other
    base = _median(runs[ref], key)
    ratios = []
    for name in names:
        value = _median(runs[name], key)
        say(
            f"   {name:<20}{value:>14{fmt}}{_median(runs[name], second):>9{second_fmt}}"
            f"{_median(runs[name], 'tokens'):>8.0f}{value / base:>21.2f}x"
        )
        ratios.append((name, value / base))
    return ratios


def report_section(results: dict[str, Any], names: list[str], schema: bool, say: Any) -> dict[str, float]:
    tag = " with a JSON-schema response_format" if schema else ""
    ref = "llama-server" if "llama-server" in names else names[0]
    goals: dict[str, float] = {}
    say(f"a. 8 concurrent chats x 32 tokens{tag}")
    say(f"   {'server':<20}{'median wall s':>14}{'tok/s':>9}{'tokens':>8}{'wall / ' + ref:>22}")
    for name, ratio in _ratio_rows(say, results["8x32"], names, ref, ("wall", ".2f"), ("tok_s", ".1f")):
        goals[f"8x32 {name}"] = ratio
    say(f"b. one stream of 128 tokens{tag}")
    say(f"   {'server':<20}{'tok/s':>14}{'TTFT s':>9}{'tokens':>8}{'tok/s / ' + ref:>22}")
    for name, ratio in _ratio_rows(say, results["stream"], names, ref, ("tok_s", ".1f"), ("ttft", ".3f")):
        goals[f"stream {name}"] = ratio
    say(f"c. 32 concurrent streams x 32 tokens{tag}")
    say(f"   {'server':<20}{'median wall s':>14}{'max TTFT':>9}{'tokens':>8}{'all progressed':>22}")
    for name in names:
        runs = results["32x32"][name]
        progressed = all(r["progressed"] for r in runs)
        say(
            f"   {name:<20}{_median(runs, 'wall'):>14.2f}{_median(runs, 'max_ttft'):>9.2f}"
            f"{_median(runs, 'tokens'):>8.0f}{progressed!s:>22}"
        )
    return goals


async def run(args: argparse.Namespace, say: Any) -> None:
    names = args.only.split(",")
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        servers = start_servers(stack, names, args.threads, Path(tmp), say)
        say(
            f"model: {servers[0].model} ({default_model_path().name}), {args.threads} threads each, "
            f"{SLOTS} slots, {args.rounds} rounds interleaved, greedy"
        )
        say(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start")
        say()
        goals: dict[str, float] = {}
        for schema in (False, True):
            results = await measure(servers, args.rounds, schema, lambda line: print(line, flush=True))
            section = report_section(results, names, schema, say)
            goals.update({f"{k}{' schema' if schema else ''}": v for k, v in section.items()})
            say()
        for server in servers:
            await server.client.close()
    if "ncompass" in names and "llama-server" in names:
        for schema in ("", " schema"):
            wall, rate = goals[f"8x32 ncompass{schema}"], goals[f"stream ncompass{schema}"]
            tag = " (JSON schema)" if schema else ""
            say(
                f"goal 8 concurrent{tag}: ncompass wall <= 1.2x llama-server's: {wall:.2f}x -> "
                f"{'met' if wall <= 1.2 else 'NOT met'}"
            )
            say(
                f"goal one stream{tag}: ncompass tok/s >= 0.9x llama-server's: {rate:.2f}x -> "
                f"{'met' if rate >= 0.9 else 'NOT met'}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--only", default="ncompass,llama-server,llama_cpp.server", help="servers to run")
    parser.add_argument("--no-save", action="store_true", help="do not write bench/results/engine.txt")
    args = parser.parse_args()
    say = Report()
    say(f"bench/engine.py: llama-cpp-python {importlib.metadata.version('llama_cpp_python')}")
    asyncio.run(run(args, say))
    if not args.no_save:
        say.save(RESULT)


if __name__ == "__main__":
    main()
