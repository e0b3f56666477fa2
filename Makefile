# `make` runs what a change must pass before review: lint, types and the fast tests.
PYTHON ?= python3
PATHS := src tests benchmarks examples

.DEFAULT_GOAL := all
.PHONY: all check lint types test-fast test test-matrix format settings-docs

# The servers test-matrix runs the integration suite on (docs/servers.md); redis8 and valkey8
# are built on first use into /var/cache/redbatch-servers (debootstrap, ~1 min, root).
SERVERS ?= redis7 redis8 valkey8

all: lint types test-fast

check: lint types

lint:
	ruff check $(PATHS)
	ruff format --check $(PATHS)
	PYTHONPATH=src lint-imports  # the layers contract in pyproject.toml

types:
	mypy src/redbatch examples

test-fast:
	$(PYTHON) -m pytest tests/unit -q

test:
	$(PYTHON) -m pytest

test-matrix:
	set -e; for server in $(SERVERS); do \
		echo "== integration suite on $$server"; \
		REDBATCH_TEST_SERVER=$$server $(PYTHON) -m pytest tests/integration -q; \
	done

format:
	ruff format $(PATHS)
	ruff check --fix $(PATHS)

# The configuration table and .env.example, written from the settings' fields.
settings-docs:
	PYTHONPATH=src $(PYTHON) -m redbatch.config_reference docs/configuration.md .env.example
