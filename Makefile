# The two commands of the README. Each sets up what it needs on a fresh machine:
# a virtualenv with torch pinned FIRST (a loose pin would pull a multi-GB CUDA build),
# then this package: plain for the quickstart, with the test and optional extras
# (ray, nni, data) for the tests, so CI exercises every back-end.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TESTSTAMP := $(VENV)/.installed-test

.PHONY: quickstart test install clean

quickstart: $(STAMP)
	$(BIN)/gaze-nas run experiments/quickstart.yaml --out runs/quickstart

test: $(TESTSTAMP)
	$(BIN)/python -m pytest

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e .
	touch $(STAMP)

$(TESTSTAMP): $(STAMP)
	$(BIN)/pip install --quiet -e ".[dev,ray,nni,data]"
	touch $(TESTSTAMP)

clean:
	rm -rf $(VENV) runs .pytest_cache
