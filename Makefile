# notiflow: `make run` starts everything locally, `make test` tests it over real parts.
# The first target that needs the venv creates it (.venv/.installed follows pyproject.toml).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install run test test-unit lint bench stats sample replay-dlq clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -U pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	@touch $@

run: $(STAMP)
	$(PY) -m stack.run $(ARGS)

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -p no:cacheprovider

test-unit: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider tests/unit

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(PY) -m bench $(ARGS)

stats: $(STAMP)
	$(PY) -m loader.stats $(ARGS)

sample: $(STAMP)
	$(PY) -m stack.sample

replay-dlq: $(STAMP)
	$(PY) -m stack.replay_dlq $(ARGS)

clean:
	rm -rf var
