# The two commands a newcomer runs (see README): `make prune` and `make test`. Each creates .venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_DISABLE_TELEMETRY=1

.PHONY: env prune test lint bench study clean
env:
	@bash scripts/setup-env.sh

prune: env
	$(VENV)/bin/px-hub prune $(ARGS)

# OMP_WAIT_POLICY=PASSIVE: idle OpenMP threads sleep instead of spinning (the multi-process tests share 2 cores).
test: env
	HF_HUB_OFFLINE=1 OMP_WAIT_POLICY=PASSIVE $(PY) -m pytest -q $(PYTEST_ARGS)

lint: env
	$(VENV)/bin/ruff check .

bench: env
	$(PY) benchmarks/bench_px.py

clean:
	rm -rf $(VENV) px-ticket
