# cxlnet: every target installs what it needs into .venv first.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is installed first and pinned, so no dependency range can pull a CUDA build.
TORCH_VERSION ?= 2.13.0
export WANDB_MODE ?= offline

.PHONY: help install demo test test-slow test-tpu mutate bench reproduce-table pretrain-demo clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -e 's|$$(TORCH_VERSION)|$(TORCH_VERSION)|g' \
		-e 's|$$(TABLES)|$(TABLES)|g' | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

install: $(VENV)/.installed  ## create .venv with torch $(TORCH_VERSION) and cxlnet[test]

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet "torch==$(TORCH_VERSION)"
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

demo: install  ## fine-tune a tiny XLNet on the shipped ChnSentiCorp sample (CPU, a few minutes)
	$(BIN)/cxlnet finetune experiment=demo

test: install  ## the default test suite (no GPU, no network)
	WANDB_MODE=disabled $(BIN)/pytest -q

test-slow: install  ## the slow tests (installs tensorflow-cpu to check our TF-checkpoint reader against it)
	$(BIN)/pip install --quiet -e ".[test,tf]"
	WANDB_MODE=disabled $(BIN)/pytest -q -m slow

MUTATE_ARGS ?= --sample 40 --budget 900
mutate: install  ## mutation testing of the core modules (slow: hours on 2 cores; MUTATE_ARGS="--only cxlnet/sweep.py")
	$(BIN)/pip install --quiet -e ".[test,mutate]"
	WANDB_MODE=disabled $(BIN)/python tools/mutate.py $(MUTATE_ARGS)

# hardware=tpu exercised on this CPU: torch-xla runs XLA on the host with PJRT_DEVICE=CPU. It pins its own
# torch (on x86_64 a ~7 GB CUDA build), so it gets a venv of its own; .venv is left as it is.
TPU_VENV ?= .venv-tpu
XLA_TORCH_VERSION ?= 2.9.1
TORCH_XLA_VERSION ?= 2.9.0
XLA_PINS := "torch==$(XLA_TORCH_VERSION)" "torch-xla==$(TORCH_XLA_VERSION)"

$(TPU_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(TPU_VENV)
	$(TPU_VENV)/bin/pip install --quiet $(XLA_PINS)
	$(TPU_VENV)/bin/pip install --quiet -e ".[tpu]" "pytest>=8" "pytest-timeout>=2.3" $(XLA_PINS)
	touch $@

test-tpu: $(TPU_VENV)/.installed  ## hardware=tpu on the CPU through torch-xla (own venv .venv-tpu, ~7 GB; slow)
	WANDB_MODE=disabled PJRT_DEVICE=CPU $(TPU_VENV)/bin/pytest -q -m tpu tests/test_tpu.py

bench: install  ## cxlnet vs transformers, side by side (CPU always, GPU when present)
	$(BIN)/python -m benchmarks.run

TABLES ?= experiments/
PROFILE ?= paper
reproduce-table: install  ## run every row of $(TABLES) with PROFILE=paper|smoke (finished seeds are kept) and render the tables
	$(BIN)/cxlnet table run $(TABLES) --profile $(PROFILE)

pretrain-demo: install  ## pre-train a tiny XLNet on the shipped corpus sample: vocab + data + train (CPU, a few minutes)
	$(BIN)/cxlnet vocab vocab.vocab_size=8000
	$(BIN)/cxlnet data data.if_exists=overwrite
	$(BIN)/cxlnet train experiment=pretrain_demo

clean:  ## remove build outputs (keeps runs/)
	rm -rf $(VENV) $(TPU_VENV) .pytest_cache build dist *.egg-info
