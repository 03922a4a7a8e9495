# The two set-up commands: `make run` (install and run the whole system) and `make test` (install and test).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
ARGS ?=
PYTEST_ARGS ?=

.PHONY: run test validate-deploy clean

# `prepare` exports the encoder and trains the default intents once (about 80 s); after that it is a no-op.
run: $(VENV)/.installed
	$(BIN)/supportbot prepare
	$(BIN)/supportbot up $(ARGS)

test: $(VENV)/.installed-test
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest $(PYTEST_ARGS)

validate-deploy: $(VENV)/.installed-test
	PATH="$(abspath $(BIN)):$$PATH" scripts/validate-deploy.sh

$(BIN)/python:
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "supportbot needs Python 3.11 or newer"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# torch is only needed once, to export the nlp sentence encoder: the CPU wheel keeps the venv small.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[all]' 'torch==2.13.0'
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed

clean:
	rm -rf $(VENV) .supportbot .pytest_cache
