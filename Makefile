# Set-up and the main jobs. `make test` and `make demo` work on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch goes in first, so the range in pyproject.toml is already satisfied
# and pip does not pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0

.PHONY: install lint test demo bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[test]"
	touch $@

install: $(VENV)/.installed

# ruff (style, imports, complexity, docstrings) and mypy (types), both configured in pyproject.toml.
lint: install
	$(PY) -m ruff check .
	$(PY) -m mypy

# Lint first, then every test, the slow ones included (`pytest -m "not slow"` skips those).
test: lint
	SDL_VIDEODRIVER=dummy SDL_AUDIODRIVER=dummy $(PY) -m pytest -q

demo: install
	SDL_VIDEODRIVER=dummy SDL_AUDIODRIVER=dummy $(VENV)/bin/dreamgym demo --out demo

bench: install
	SDL_VIDEODRIVER=dummy SDL_AUDIODRIVER=dummy $(PY) benchmarks/bench_dream.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
