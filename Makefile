# Two commands, no set-up needed:  `make repro` runs the study end to end,  `make test` runs the tests.
# Both create .venv/ with the versions pinned in pyproject.toml on first use.
PYTHON  ?= python3
VENV    ?= .venv
PROFILE ?= auto
BIN     := $(VENV)/bin

.PHONY: setup repro test test-fast bench status pack

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -e .
	@touch $@

## the whole pipeline: smoke profile on a CPU, study profile with a GPU (PROFILE=smoke|study to choose)
repro: setup
	$(BIN)/python -m regstudy.repro --profile $(PROFILE)

## unit tests and the smoke `dvc repro` end to end (~20 minutes on 2 CPU cores)
test: setup
	$(BIN)/python -m pytest

## the unit tests only (no smoke pipeline; about 2 min on 2 CPU cores), for people editing code
test-fast: setup
	$(BIN)/python -m pytest -m "not slow"

## training throughput and MFU of ViT-S/4, ViT-S/2, ViT-B/2 at batch 512
bench: setup
	$(BIN)/python -m regstudy.bench

## what a (detached) make repro has done, is doing and has left, with the time left
status: setup
	$(BIN)/python -m regstudy.status

## one archive of results/<profile> and the run logs, no checkpoints (PROFILE=study|smoke)
pack: setup
	$(BIN)/python -m regstudy.pack results/$(if $(filter auto,$(PROFILE)),smoke,$(PROFILE))

