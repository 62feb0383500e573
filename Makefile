# pmls — the two commands a newcomer needs: `make demo` and `make test`.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-fast up lint format clean

install: $(STAMP)  ## create .venv and install pmls with its dev tools (idempotent)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

demo: install  ## start the embedded stack, train a real model end to end, print it, stop
	$(BIN)/pmls demo

test: install  ## the whole suite on the real stack (embedded servers unless PMLS_* URLs are set)
	$(BIN)/pytest

test-fast: install  ## the fast layer (< 2 min): contracts, layout rules, stores, workflows, one real job
	$(BIN)/pytest -m fast

up: install  ## run the stack in the foreground until Ctrl-C
	$(BIN)/pmls up

CODE   := pmls api workers workflows activities tests bench

lint: install  ## ruff's checks and its formatting; fails on any finding (`make format` fixes the formatting)
	$(BIN)/ruff check $(CODE)
	$(BIN)/ruff format --check $(CODE)

format: install  ## rewrite the code in ruff's format and apply ruff's safe fixes
	$(BIN)/ruff format $(CODE)
	$(BIN)/ruff check --fix $(CODE)

clean:
	rm -rf .pmls .pytest_cache .ruff_cache
