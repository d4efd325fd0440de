# The two commands:  `make demo`  and  `make test`.
# Each creates .venv on first use and installs edgefleet with the pinned versions in constraints.txt.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.edgefleet-installed
# checkov (the static checks of deploy/ and terraform/) in a venv of its own: it pins termcolor<2.4.
TOOLS  ?= .venv-tools
TOOLS_STAMP := $(TOOLS)/.edgefleet-tools-installed
EXTRAS ?= hub,agent,dev,tflite
PYTEST_ARGS ?=

.PHONY: demo test lint typecheck proto venv tools clean check

venv: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "edgefleet needs Python >= 3.11, found " + sys.version.split()[0])'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade "pip>=24"
	$(PY) -m pip install --quiet -c constraints.txt -e ".[$(EXTRAS)]"
	@touch $(STAMP)

tools: $(TOOLS_STAMP)

$(TOOLS_STAMP): constraints-tools.txt
	test -x $(TOOLS)/bin/python || $(PYTHON) -m venv $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --upgrade "pip>=24"
	$(TOOLS)/bin/python -m pip install --quiet -c constraints-tools.txt checkov
	@touch $(TOOLS_STAMP)

demo: $(STAMP)
	$(VENV)/bin/fleet demo

test: $(STAMP) $(TOOLS_STAMP)
	$(PY) -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy

check: lint typecheck test

proto: $(STAMP)
	$(PY) scripts/gen_proto.py

clean:
	rm -rf $(VENV) $(TOOLS) .pytest_cache .mypy_cache .ruff_cache .edgefleet
