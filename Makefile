# The two commands of the README. Each sets up what it needs on a fresh machine:
# a virtualenv with torch pinned FIRST (a loose pin would pull a multi-GB CUDA build),
# then this package with its test extras.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: quickstart test install clean

quickstart: $(STAMP)
	$(BIN)/gaze-nas run experiments/quickstart.yaml --out runs/quickstart

test: $(STAMP)
	$(BIN)/python -m pytest

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[dev]"
	touch $(STAMP)

clean:
	rm -rf $(VENV) runs .pytest_cache
