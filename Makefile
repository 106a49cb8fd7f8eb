# medmask: every target builds (once) the cached virtual environment it needs.
# The venv lives in ~/.cache/medmask/venv-<hash of pyproject.toml>, outside the clone.
SHELL := /bin/bash
# Each clone imports its own sources: the raylet, every Ray worker and every `ray start` node
# started from here inherit this (the shared venv holds only the dependencies).
export PYTHONPATH := $(CURDIR)/platform:$(CURDIR)
PYTEST_ARGS ?= --durations=12
ARGS ?=

.PHONY: venv demo test test-fast test-studies lint bench clean-venv

venv:
	@bash .ci/venv.sh

## Run the main job on the embedded default (synthetic phantoms, local Ray, local MLflow).
demo:
	@venv=$$(bash .ci/venv.sh) && $$venv/bin/python experiments/ahm.py $(ARGS)

## Run the test suite (what CI runs): everything but the whole-study Tune runs.
test:
	@venv=$$(bash .ci/venv.sh) && $$venv/bin/python -m pytest -m "not study" $(PYTEST_ARGS)

## The whole-study Tune runs (sweep=seg_guided_ssl, sweep=grounding), by hand: minutes each.
test-studies:
	@venv=$$(bash .ci/venv.sh) && $$venv/bin/python -m pytest -m study $(PYTEST_ARGS)

## The suite without the slow end-to-end tests.
test-fast:
	@venv=$$(bash .ci/venv.sh) && $$venv/bin/python -m pytest -m "not slow and not study" $(PYTEST_ARGS)

lint:
	@venv=$$(bash .ci/venv.sh) && $$venv/bin/python -m ruff check platform envs experiments tests benchmarks

## Print the measured speed ratios (benchmarks/*.py).
bench:
	@venv=$$(bash .ci/venv.sh) && for b in benchmarks/*.py; do echo "== $$b"; $$venv/bin/python $$b || exit 1; done

clean-venv:
	rm -rf $${MEDMASK_VENV_CACHE:-$$HOME/.cache/medmask}
