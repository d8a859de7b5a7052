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
	GAMORNET_VARIANT=cpu $(BIN)/python -m pip install --quiet -e '.[test,sim,docs,survey,fast,distributed]'
	touch $(STAMP)

# oneDNN changes TensorFlow's floating-point rounding, and TensorFlow turns it on
# by itself on some CPUs only (AVX512 with VNNI or BF16). So that every machine
# checks both paths, the whole suite runs with oneDNN on, then the tests marked
# `numeric` run again with it off.
test: install
	TF_ENABLE_ONEDNN_OPTS=1 $(BIN)/python -m pytest
	TF_ENABLE_ONEDNN_OPTS=0 $(BIN)/python -m pytest -m numeric

demo: install
	$(BIN)/gamornet demo --output-dir demo_output --magnitude-range 19 22.5

docs: install
	$(BIN)/python -m sphinx -W --keep-going -b html docs docs/_build/html

clean:
	rm -rf $(VENV) build dist *.egg-info demo_output
