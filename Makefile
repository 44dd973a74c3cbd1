PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
RUFF_ARGS := --line-length 120 --target-version py311 --select E,F,W,I,B,UP,ASYNC,RUF --ignore E501,RUF012,ASYNC109

.PHONY: install run test check bench demo clean

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

install: $(VENV)/.installed

run: install
	$(PY) -m gateway serve

test: install
	$(PY) -m pytest -q

check: install
	$(VENV)/bin/ruff check $(RUFF_ARGS) gateway providers config tests
	$(VENV)/bin/mypy

bench: install
	$(PY) -m tests.bench

demo: install
	$(PY) -m tests.demo

clean:
	rm -rf $(VENV) build *.egg-info
