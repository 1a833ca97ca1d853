# BuildX: `make run` starts the platform, `make test` runs the tests. Both install what they need.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
STAMP := $(VENV)/.installed

.PHONY: run test install lint bench clean

$(PY):
	$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "BuildX needs Python 3.11"'
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

# torch first and alone: on these machines `torch==2.13.0` resolves to the CPU wheel on disk.
$(STAMP): requirements.txt requirements-dev.txt | $(PY)
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -r requirements-dev.txt
	touch $(STAMP)

install: $(STAMP)

run: install
	$(PY) manage.py migrate --noinput
	$(PY) manage.py ensure_demo_user
	$(PY) manage.py serve --host $${HOST:-127.0.0.1} --port $${PORT:-8000}

# Two pytest processes (pytest-xdist): most of the suite waits on workers, sandboxes and the browser.
# TEST_PROCESSES=0 runs it in one process.
TEST_PROCESSES ?= 2
test: install
	$(PY) -m pytest -n $(TEST_PROCESSES) $(PYTEST_ARGS)

# Figures, not tests: each bench/*.py prints what it measured.
bench: install
	for script in bench/*.py; do $(PY) $$script || exit 1; done

# mypy's settings are in pyproject.toml; its cache is var/mypy-cache (a cold run takes minutes: torch).
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) var .pytest_cache
