PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
RUFF_ARGS := --line-length 120 --target-version py311 --select E,F,W,I,B,UP,ASYNC,RUF --ignore E501,RUF012,ASYNC109

.PHONY: install install-runtime run test test-fast test-public test-lowest check bench demo clean

# The project with its test extra (what test, check and bench need); it includes the runtime install.
$(VENV)/.installed: setup.cfg setup.py pyproject.toml gateway/billing/_lane.c
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed-runtime

# The project and its runtime dependencies only: what `make run` needs.
$(VENV)/.installed-runtime: setup.cfg setup.py pyproject.toml gateway/billing/_lane.c
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $@

install: $(VENV)/.installed

install-runtime: $(VENV)/.installed-runtime

run: install-runtime
	$(VENV)/bin/gateway serve

test: install
	$(PY) -m pytest -q

# The suite without the tests marked slow (the bench smoke run, the demo, the fuzzer): a quicker loop.
test-fast: install
	$(PY) -m pytest -q -m "not slow"

# The whole suite on aiohttp's public API only (no lean client or writer), as an untested aiohttp gets it.
test-public: install
	GATEWAY_HTTP_PATH=public $(PY) -m pytest -q -m "not slow"

# The whole suite on the lowest version of every runtime dependency that setup.cfg allows.
LOWEST := .venv-lowest
$(LOWEST)/.installed: setup.cfg setup.py pyproject.toml gateway/billing/_lane.c .ci/lowest_pins.py
	test -x $(LOWEST)/bin/python || $(PYTHON) -m venv $(LOWEST)
	$(LOWEST)/bin/python -m pip install --quiet --upgrade pip
	$(LOWEST)/bin/python -m pip install --quiet -e '.[test]'
	$(LOWEST)/bin/python .ci/lowest_pins.py > $(LOWEST)/pins.txt
	$(LOWEST)/bin/python -m pip install --quiet -r $(LOWEST)/pins.txt
	$(LOWEST)/bin/python -m pip check
	touch $@

test-lowest: $(LOWEST)/.installed
	$(LOWEST)/bin/python -m pip freeze | grep -i -f $(LOWEST)/pins.txt
	$(LOWEST)/bin/python -m pytest -q

check: install
	$(VENV)/bin/ruff check $(RUFF_ARGS) gateway providers config tests
	$(VENV)/bin/mypy

bench: install
	$(PY) -m tests.bench

demo: install
	$(PY) -m tests.demo

clean:
	rm -rf $(VENV) $(LOWEST) build *.egg-info
