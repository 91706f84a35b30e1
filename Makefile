# Every target is one line; the venv is the only state.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA_DIR ?= ../shared/data
BUNDLE ?= bundles/demo

.PHONY: redis install test lint typecheck check demo serve bench evaluate clean

$(BIN)/activate: pyproject.toml
	$(PY) -m venv $(VENV) && $(BIN)/pip install -q --upgrade pip && $(BIN)/pip install -q -e '.[train,dev,loadtest]' && touch $(BIN)/activate

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

clean:
	rm -rf $(VENV) bundles .pytest_cache .mypy_cache .ruff_cache
