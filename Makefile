# Two commands for a new user: `make serve` and `make test`. Both create the virtualenv first.
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU wheel of torch. On a machine with pip's default index, `make TORCH="torch==2.13.0
# --index-url https://download.pytorch.org/whl/cpu"` avoids the multi-GB CUDA build.
TORCH ?= torch==2.13.0

.PHONY: serve test lint check bench models clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[test]'
	touch $@

serve: $(VENV)/.installed  ## serve the sample models on http://127.0.0.1:8000
	$(VENV)/bin/inferno serve

test: $(VENV)/.installed  ## the whole test suite
	$(PY) -m pytest -q

lint: $(VENV)/.installed  ## ruff + mypy (strict on common, facade, worker, inferno)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

check: lint test

bench: $(VENV)/.installed  ## embedded-mode throughput and latency at c=1,16,64
	$(PY) -m bench --concurrency 1,16,64 --duration 5

models: $(VENV)/.installed  ## rebuild the sample TorchScript artifacts
	$(PY) models/build.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
