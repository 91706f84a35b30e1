# Every target is one line; the venv is the only state.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA_DIR ?= ../shared/data
BUNDLE ?= bundles/demo

.PHONY: redis install test lint typecheck check demo serve bench evaluate parity clean

$(BIN)/activate: pyproject.toml constraints-dev.txt
	$(PY) -m venv $(VENV) && $(BIN)/pip install -q --upgrade pip && $(BIN)/pip install -q -c constraints-dev.txt -e '.[train,dev,loadtest]' && touch $(BIN)/activate

install: $(BIN)/activate redis

redis:
	@command -v redis-server >/dev/null || (apt-get update -q && apt-get install -y -q redis-server)

test: install
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .

typecheck: install
	$(BIN)/mypy

check: lint typecheck test

$(BUNDLE)/manifest.json: | install
	$(BIN)/python -m models build --dataset ml-latest-small --out $(BUNDLE)

demo: $(BUNDLE)/manifest.json
	DUET_BUNDLE=$(BUNDLE) $(BIN)/python -m service

evaluate: install
	$(BIN)/python -m models evaluate --dataset ml-latest-small --json reports/ml-latest-small.json

# Strong generalization served over HTTP equals the offline figure (docs/strong-generalization.md).
PARITY_DATASET ?= ml-latest-small
PARITY_ARGS ?=
parity: install
	$(BIN)/python bench/parity.py --dataset $(PARITY_DATASET) $(PARITY_ARGS)

clean:
	rm -rf $(VENV) bundles .pytest_cache .mypy_cache .ruff_cache

# Operations (issue 5): compose validation, load test, benchmark. Tools come from the OS packages.
.PHONY: ops-tools prometheus compose-config loadtest bench-miss
LOADTEST_HOST ?= http://127.0.0.1:8000
SOAK_MINUTES ?= 10
install: ops-tools
ops-tools:
	@(command -v wrk >/dev/null && (command -v docker-compose >/dev/null || docker compose version >/dev/null 2>&1)) || (apt-get update -q && apt-get install -y -q wrk docker-compose) || (echo "missing tools: run  sudo apt-get install -y wrk docker-compose" >&2; exit 1)
# The suite's real-Prometheus test (tests/ops/test_prometheus.py) evaluates the dashboard's queries.
install: prometheus
prometheus:
	@command -v prometheus >/dev/null || (apt-get update -q && apt-get install -y -q prometheus) || (echo "missing tool: run  sudo apt-get install -y prometheus" >&2; exit 1)
compose-config: ops-tools
	@if docker compose version >/dev/null 2>&1; then docker compose -f docker-compose.yml config -q; else docker-compose -f docker-compose.yml config -q; fi && echo "docker-compose.yml is valid"
loadtest: install
	mkdir -p reports/tmp/loadtest && $(BIN)/locust -f loadtest/locustfile.py --headless --host $(LOADTEST_HOST) --bundle $(BUNDLE) -u 20 -r 5 -t 60s --max-requests 200000 --max-p99-ms 250 --csv reports/tmp/loadtest/run --only-summary
bench: $(BUNDLE)/manifest.json ops-tools redis
	$(BIN)/python bench/run.py --bundle $(BUNDLE) --out bench/results --readme README.md
# A million synthetic items x 20,000 users: built once (minutes), then reused.
SCALE_ITEMS ?= 1000000
SCALE_USERS ?= 20000
SCALE_DATA ?= data/synth-$(SCALE_ITEMS)
SCALE_BUNDLE ?= bundles/synth-$(SCALE_ITEMS)
$(SCALE_DATA)/interactions.parquet: | install
	$(BIN)/python -m models synth --items $(SCALE_ITEMS) --users $(SCALE_USERS) --out $(SCALE_DATA)
$(SCALE_BUNDLE)/manifest.json: $(SCALE_DATA)/interactions.parquet
	$(BIN)/python -m models build --dataset synth --data-dir $(SCALE_DATA) --out $(SCALE_BUNDLE) --no-baselines
.PHONY: bench-scale
bench-scale: $(SCALE_BUNDLE)/manifest.json ops-tools redis
	$(BIN)/python bench/run.py --scale --bundle $(SCALE_BUNDLE) --out bench/results --readme README.md
# Issue 12's targets: upsert to retrievable and delete to never served, two workers under load.
.PHONY: live-drill
live-drill: $(BUNDLE)/manifest.json redis
	$(BIN)/python bench/live_drill.py --bundle $(BUNDLE)
.PHONY: bench-cluster
bench-cluster: $(BUNDLE)/manifest.json ops-tools redis
	$(BIN)/python bench/cluster_ratio.py --bundle $(BUNDLE)
bench-miss: $(BUNDLE)/manifest.json redis
	$(BIN)/python bench/miss_path.py --bundle $(BUNDLE)

# Failure drills (issue 6): each starts its own Redis and service on loopback, exits 1 on a missed target.
.PHONY: chaos chaos-cluster overload soak compaction
chaos: $(BUNDLE)/manifest.json redis
	$(BIN)/python loadtest/chaos_redis.py --bundle $(BUNDLE)
chaos-cluster: $(BUNDLE)/manifest.json redis
	$(BIN)/python loadtest/chaos_cluster.py --bundle $(BUNDLE)
overload: $(BUNDLE)/manifest.json redis
	$(BIN)/python loadtest/overload.py --bundle $(BUNDLE)
compaction: $(BUNDLE)/manifest.json redis
	$(BIN)/python loadtest/compaction.py --bundle $(BUNDLE)
soak: $(BUNDLE)/manifest.json redis
	$(BIN)/python loadtest/soak.py --bundle $(BUNDLE) --minutes $(SOAK_MINUTES)
