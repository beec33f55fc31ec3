# Two commands do all set-up on a fresh machine:
#   make demo   - the main job on the embedded default (server, process pool, deploy, run, logs)
#   make test   - the test suite (SQLite and PostgreSQL)
VENV ?= .venv
PYTHON ?= python3

.PHONY: install demo test lint bench

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -U pip
	$(VENV)/bin/pip install -q -e '.[dev,aws,gcp,azure,modal]'
	touch $@

demo: install
	PATH="$(CURDIR)/$(VENV)/bin:$$PATH" bash examples/quickstart.sh

test: install
	$(VENV)/bin/pytest -q

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

bench: install
	$(VENV)/bin/python bench/run_all.py
