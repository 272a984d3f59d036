# notiflow: `make run` starts everything locally, `make test` tests it over real parts.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: run test test-unit lint bench stats sample replay-dlq clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@rm -f $(VENV)/.installed-*
	@touch $@

run: $(STAMP)
	$(PY) -m stack.run

test: $(STAMP)
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -p no:cacheprovider tests

test-unit: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider tests/unit

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(PY) -m bench $(ARGS)

stats: $(STAMP)
	$(PY) -m loader.stats

sample: $(STAMP)
	$(PY) -m stack.sample

replay-dlq: $(STAMP)
	$(PY) -m stack.replay_dlq

clean:
	rm -rf var
