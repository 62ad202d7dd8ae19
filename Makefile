# Weight Atlas. `make atlas` builds the default atlas into site/; `make deploy` publishes it to
# the gh-pages branch of REMOTE (GitHub Pages); `make test` runs the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# PyTorch, installed first. Set TORCH= to keep a torch you installed yourself, or, for a
# CPU-only wheel from PyTorch's own index on Linux (PyPI's wheel there is the CUDA build):
#   make TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
TORCH ?= torch==2.13.0
# Model definitions the tests build atlases of, installed without their dependencies: torchvision's
# release for torch 2.13 (its compiled operators are not needed) and facenet-pytorch, which ships
# trained MTCNN weights. With a torch of your own, name the torchvision that matches it.
TEST_MODELS ?= torchvision==0.28.0 facenet-pytorch==2.6.0
CONFIG ?= site_config/default.yml
PORT ?= 8000
REMOTE ?= origin
BRANCH ?= gh-pages

.PHONY: install install-test atlas serve deploy test bench default-model clean

# What a build needs, and nothing else.
install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(if $(TORCH),$(PY) -m pip install --quiet $(TORCH))
	$(PY) -m pip install --quiet -e .
	touch $@

# The tests' tools, the extras (Ray, ONNX) and the models the tests build atlases of. The test
# models come first, so that the ONNX extra finds its torchvision already there.
install-test: $(VENV)/.test-installed

$(VENV)/.test-installed: $(VENV)/.installed
	$(if $(TEST_MODELS),$(PY) -m pip install --quiet --no-deps $(TEST_MODELS))
	$(PY) -m pip install --quiet -e ".[test,ray,onnx]"
	touch $@

atlas: install
	$(PY) -m generator build $(CONFIG)

serve: atlas
	@echo "Serving site/ at http://localhost:$(PORT)/ (Ctrl-C stops)"
	$(PY) -m http.server --directory site $(PORT)

# The remote is checked before the build, which can take long.
deploy: install
	$(PY) -m generator deploy $(CONFIG) --build --remote $(REMOTE) --branch $(BRANCH)

test: install-test
	$(PY) -m pytest -q

bench: install-test
	$(PY) -m generator.bench --out bench.json

default-model: install
	$(PY) -m generator.default_model.train
	$(PY) -m generator.default_model.labels --out site_config/default.labels.yml

clean:
	rm -rf site bench.json .pytest_cache .atlas-cache $(VENV)
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
