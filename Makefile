# The two commands that matter (see README): `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint typecheck unit bench bench-batching bench-tune gpu-bundle reliability fleet clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# constraints.txt pins torch to the 2.13.0 CPU build and numpy below 2
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)  ## create .venv and install nexus with its test tools

demo: setup  ## the main job: train, store, publish, serve, query and load-test a model (local storage, local Triton)
	$(VENV)/bin/nexus quickstart "$$(mktemp -d)/nexus-quickstart"

lint: setup
	$(VENV)/bin/ruff check nexus tests benchmarks loadtest model_repository_templates
	$(VENV)/bin/ruff format --check nexus tests benchmarks loadtest model_repository_templates

typecheck: setup
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy benchmarks  # the scripts import their _bench_* helpers by path, so a run of their own

# pytest's script, not `python -m pytest`: -m would put the repository root, and its triton/ folder, on sys.path
unit: setup
	$(VENV)/bin/pytest

test: lint typecheck unit  ## everything CI runs

bench: setup  ## transfer benchmark (1 GiB; BENCH_ARGS="--size-mib 128" for a quick run)
	$(PY) benchmarks/bench_transfer.py $(BENCH_ARGS)

bench-batching: setup  ## batching benchmark on a real Triton, closed and open loop, about 25 min: rewrites docs/batching.md and docs/batching.png (BENCH_ARGS="--quick --out /tmp/bench" for a short run)
	$(PY) benchmarks/bench_batching.py $(BENCH_ARGS)

bench-tune: setup  ## nexus tune against an exhaustive grid on a real Triton, p99 5/20/100 ms (long): rewrites docs/tuning.md (BENCH_ARGS="--tiny --targets 20 --out /tmp/bench" for a smoke run)
	$(PY) benchmarks/bench_tune.py $(BENCH_ARGS)

gpu-bundle: setup  ## .gpu/bundle.tar.xz: tritonserver, its libraries and the Python backend, to carry to a GPU machine for benchmarks/gpu_check.sh
	$(PY) benchmarks/gpu_bundle.py

CHAOS_ITERATIONS ?= 50
# seconds of steady load in the sustained serving scenario (20 in CI)
SUSTAINED_S ?= 300
# requests per fuzz test of malformed requests, half as many of random bytes (120 in CI)
FUZZ_EXAMPLES ?= 2000
CHAOS_RECORD := build/chaos/outcomes.jsonl
CHAOS_ENV = NEXUS_CHAOS_ITERATIONS=$(CHAOS_ITERATIONS) NEXUS_SUSTAINED_S=$(SUSTAINED_S) NEXUS_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES)
reliability: setup  ## the chaos suite, long (CHAOS_ITERATIONS=50 per scenario, SUSTAINED_S=300, FUZZ_EXAMPLES=2000; CHAOS_ARGS for pytest): writes docs/reliability.md
	@mkdir -p $(dir $(CHAOS_RECORD)) && rm -f $(CHAOS_RECORD)
	$(CHAOS_ENV) NEXUS_CHAOS_RECORD=$(CHAOS_RECORD) \
		$(VENV)/bin/pytest tests/chaos -m chaos --timeout 7200 -p no:cacheprovider $(CHAOS_ARGS); status=$$?; \
	$(CHAOS_ENV) CHAOS_ARGS="$(CHAOS_ARGS)" \
		$(PY) tests/chaos/report.py $(CHAOS_RECORD) docs/reliability.md && exit $$status

fleet: setup  ## the local fleet's long run, about 6 min: 3 Tritons with the rendered Deployment's args, rollouts there and back, a broken release, the no-preStop controls, the autoscaling metric; writes docs/scale-out.md (FLEET_ARGS="--replicas 2 --out /tmp/scale-out.md" for a short run)
	$(PY) tests/fleet/report.py $(FLEET_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
