# `make` runs what a change must pass before review: lint, types and the fast tests.
PYTHON ?= python3
PATHS := src tests benchmarks

.DEFAULT_GOAL := all
.PHONY: all check lint types test-fast test format settings-docs

all: lint types test-fast

check: lint types

lint:
	ruff check $(PATHS)
	ruff format --check $(PATHS)

types:
	mypy src/redbatch

test-fast:
	$(PYTHON) -m pytest tests/unit -q

test:
	$(PYTHON) -m pytest

format:
	ruff format $(PATHS)
	ruff check --fix $(PATHS)

# The configuration table and .env.example, written from the settings' fields.
settings-docs:
	PYTHONPATH=src $(PYTHON) -m redbatch.config_reference docs/configuration.md .env.example
