# Two entry points: `make study` and `make test`. Both set up .venv first; the set-up is
# idempotent and returns at once when pyproject.toml has not changed.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
CORES ?= all
CONFIG ?= config.yaml

.PHONY: venv study test lint bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

study: venv
	$(BIN)/python -m scalinglab check-config config.yaml $(CONFIG)
	$(BIN)/snakemake --cores $(CORES) --configfile $(CONFIG) --rerun-incomplete --show-failed-logs

test: venv
	$(BIN)/python -m pytest -q

lint: venv
	$(BIN)/ruff check src tests
	$(BIN)/snakefmt --check Snakefile workflow/rules
	$(BIN)/snakemake --lint -n
	$(BIN)/lint-imports

bench: venv
	$(BIN)/python -m scalinglab bench train
	$(BIN)/python -m scalinglab bench fit

clean:
	rm -rf results/* .snakemake report.html
	touch results/.gitkeep
