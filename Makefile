# `make test` and `make demo` work on a fresh clone: each sets up .venv/ first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.gamornet-installed

.PHONY: install test demo docs clean

install: $(STAMP)

# The stamp makes a second `make install` a no-op; it is redone only when the
# package definition changes.
$(STAMP): setup.py setup_cpu.py setup_common.py pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	GAMORNET_VARIANT=cpu $(BIN)/python -m pip install --quiet -e '.[test,sim,docs,distributed]'
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest

demo: install
	$(BIN)/gamornet demo --output-dir demo_output --magnitude-range 19 22.5

docs: install
	$(BIN)/python -m sphinx -W --keep-going -b html docs docs/_build/html

clean:
	rm -rf $(VENV) build dist *.egg-info demo_output
