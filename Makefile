# maillab: `make run` sets up and starts the app, `make test` sets up and runs every test.
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: run serve test test-long bench clean

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "maillab needs Python 3.11 or newer")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,bench]'
	@touch $(STAMP)

run: $(STAMP)
	$(BIN)/maillab

serve: $(STAMP)
	$(BIN)/maillab serve

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-long: $(STAMP)
	$(BIN)/python -m pytest -q -m slow --run-slow

bench: $(STAMP)
	$(BIN)/python tests/benchmarks/smtp_throughput.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .hypothesis
