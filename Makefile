# One entry point for the common tasks. `make help` lists them.
PYTHON ?= python3.11
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: help install run test protos check-protos lint bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*##' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

$(BIN)/fiscal: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(BIN)/fiscal

install: $(BIN)/fiscal  ## create .venv and install the project with its dev tools

run:  ## start everything on http://127.0.0.1:8080 with a demo merchant (Ctrl-C stops)
	bash scripts/up.sh

test: install  ## the whole test suite (installs what it needs first)
	bash scripts/test.sh

protos: install  ## regenerate gen/python and gateway/fiscal.pb from protos/
	$(BIN)/python protos/generate.py

check-protos: install  ## fail if generated code drifted from protos/
	$(BIN)/python protos/generate.py --check

lint: install  ## ruff
	$(BIN)/ruff check services cli stack gateway tests protos

bench: install  ## 100 outlets x 4 terminals for 30 s through the gateway
	$(BIN)/fiscal bench --outlets 100 --terminals 4 --duration 30

clean:  ## remove the local data directory (database, logs, demo.json)
	rm -rf .fiscal
