# Two entry points on a fresh machine: `make demo` (the main job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
CHECKPOINT ?= ../shared/fixtures/compvis/full_ckpt.ckpt
CHECKPOINT_CONFIG ?= $(basename $(CHECKPOINT)).yaml
OUT ?= out

$(VENV)/.installed: setup.cfg requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements.txt -e '.[test]'
	# The reference metric packages, for parity tests only; --no-deps: their torchvision requirement
	# would replace the CPU torch (the tests load the modules that need no torchvision).
	$(VENV)/bin/pip install --quiet --no-deps pytorch-fid==0.3.0 torch-fidelity==0.4.0
	touch $@

.PHONY: demo test
demo: $(VENV)/.installed
	$(VENV)/bin/ldm-jax convert $(CHECKPOINT) --config $(CHECKPOINT_CONFIG) --out $(OUT)/checkpoint.safetensors
	$(VENV)/bin/ldm-jax check $(OUT)/checkpoint.safetensors

test: $(VENV)/.installed
	$(VENV)/bin/python -m pytest -q
