# Two entry points on a fresh machine: `make demo` (the main job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
OUT ?= out
# `make demo CONFIG=configs/demo.py:large` (a larger demo), `make demo DATA=/data/images` (your images).
DEMO_ARGS = $(if $(CONFIG),--config $(CONFIG)) $(if $(DATA),--data-dir $(DATA))

# The base install: what the library and the demo need (no TensorFlow, no PyTorch).
$(VENV)/.base: setup.cfg requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements.txt -e .
	touch $@

# The test extra on top: CPU torch and the reference packages the parity tests compare with.
$(VENV)/.installed: $(VENV)/.base
	$(VENV)/bin/pip install --quiet -r requirements.txt -e '.[test]'
	# The reference metric packages, for parity tests only; --no-deps: their torchvision requirement
	# would replace the CPU torch (the tests load the modules that need no torchvision).
	$(VENV)/bin/pip install --quiet --no-deps pytorch-fid==0.3.0 torch-fidelity==0.4.0
	# open_clip's tokenizer and CLIP's real vocabulary, for tokenizer parity tests; --no-deps: it
	# requires torchvision and timm too (the tests load its tokenizer module alone).
	$(VENV)/bin/pip install --quiet --no-deps open-clip-torch==3.3.0
	# k-diffusion's samplers, for parity tests; its training dependencies are not needed (nor installed).
	$(VENV)/bin/pip install --quiet --no-deps k-diffusion==0.1.1.post1
	touch $@

.PHONY: demo test
demo: $(VENV)/.base
	$(VENV)/bin/ldm-jax demo --out $(OUT) $(DEMO_ARGS)

# Two workers (-n 2), one test file each at a time (--dist loadfile: module fixtures are built once),
# in the order tests/conftest.py gives (--no-loadscope-reorder: the files with slow tests first).
test: $(VENV)/.installed
	$(VENV)/bin/python -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder
