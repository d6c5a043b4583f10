# Two commands on a fresh clone: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo demo-small test lint bench clean-venv

setup: $(STAMP)

# Reinstall when the project's dependencies change; otherwise nothing to do.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

test: lint
	$(BIN)/python -m pytest

# Lint and format check (ruff) and type check (mypy on snnasr/); the rules live in pyproject.toml.
lint: $(STAMP)
	$(BIN)/ruff check snnasr tests
	$(BIN)/ruff format --check snnasr tests
	$(BIN)/mypy snnasr

demo: $(STAMP)
	$(MAKE) -C recipes/demo SNNASR=$(abspath $(BIN))/snnasr

demo-small: $(STAMP)
	$(MAKE) -C recipes/demo SMALL=1 SNNASR=$(abspath $(BIN))/snnasr

bench: $(STAMP)
	$(BIN)/snnasr bench

clean-venv:
	rm -rf $(VENV)
