"""``python -m llama_cpp.server`` with llama.cpp's weight repacking off where the llama engine turns it off.

llama-cpp-python's own server has no flag for ``llama_model_params.use_extra_bufts``; where the build has
llama.cpp's AMX kernels, the repacked weights crash it on its first prompt
(:func:`ncompass_openai.server.engines.llama.repack_is_safe`). Elsewhere this is the server unchanged.
Run it as a script, with ``llama_cpp.server``'s own arguments (the tests and ``bench/engine.py`` do).
"""

from __future__ import annotations

import runpy
from typing import Any

import llama_cpp.llama_cpp as lib

from ncompass_openai.server.engines.llama import repack_is_safe

if not repack_is_safe():
    _default = lib.llama_model_default_params

    def _params() -> Any:
        params = _default()
        params.use_extra_bufts = False
        return params

    lib.llama_model_default_params = _params

runpy.run_module("llama_cpp.server", run_name="__main__", alter_sys=True)
