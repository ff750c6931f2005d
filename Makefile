# The two commands a newcomer runs (see README): `make prune` and `make test`. Each creates .venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
export HF_HUB_DISABLE_TELEMETRY=1

.PHONY: env prune test bench study clean
env:
	@bash scripts/setup-env.sh

prune: env
	$(VENV)/bin/px-hub prune $(ARGS)

test: env
	HF_HUB_OFFLINE=1 $(PY) -m pytest -q $(PYTEST_ARGS)

bench: env
	$(PY) benchmarks/bench_px.py

clean:
	rm -rf $(VENV) px-ticket
