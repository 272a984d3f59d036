# notiflow: `make run` starts everything locally, `make test` tests it over real parts.
# The first target that needs the venv creates it (.venv/.installed follows pyproject.toml).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install browser run test test-unit lint bench stats sql sample replay-dlq user-token fanout-status clean api-key

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -U pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	@touch $@

run: $(STAMP)
	$(PY) -m stack.run $(ARGS)

# Debian's Chromium for the dashboard's browser test (tests/e2e/test_dashboard.py)
browser:
	@command -v chromium >/dev/null || (apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium)

test: $(STAMP) browser
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -q -p no:cacheprovider

test-unit: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider tests/unit

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# wrk (Debian) loads the gateway in the bench: a Python client saturates before it does
bench: $(STAMP)
	@command -v wrk >/dev/null || (apt-get update -q && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q wrk) || echo "no wrk: gateway phase skipped"
	$(PY) -m bench $(ARGS)

stats: $(STAMP)
	$(PY) -m loader.stats $(ARGS)

sql: $(STAMP)  # make sql Q="SELECT ..." (or the SQL on stdin): raw read-only SQL, local loader only
	$(PY) -m loader.sql $(if $(Q),"$(Q)")

sample: $(STAMP)
	$(PY) -m stack.sample

replay-dlq: $(STAMP)
	$(PY) -m stack.replay_dlq $(ARGS)

fanout-status: $(STAMP)  # make fanout-status ID=<notification id>: a fan-out's progress
	@test -n "$(ID)" || (echo "usage: make fanout-status ID=<notification id>" >&2; exit 2)
	@$(PY) -m stack.fanout_status "$(ID)" $(ARGS)

api-key: $(STAMP)  # make api-key NAME=svc [SCOPE='social.*'] [RATE=100]: a producer API key, shown once
	@test -n "$(NAME)" || (echo "usage: make api-key NAME=<name> [SCOPE='social.*' or '*' or admin or broadcast] [RATE=req/s]" >&2; exit 2)
	@$(PY) -m gateway.api_keys create "$(NAME)" --scope '$(or $(SCOPE),*)' $(if $(RATE),--rate $(RATE))

user-token: $(STAMP)  # make user-token USER=u1 [TTL=3600]: a signed token for the people's API
	@# USER must come from the command line: the shell's own $$USER is not a user id
	@test "$(origin USER)" = "command line" -a -n "$(USER)" || \
		(echo "usage: make user-token USER=<user id> [TTL=seconds]" >&2; exit 2)
	@$(PY) -m gateway.user_tokens "$(USER)" $(if $(TTL),--ttl $(TTL))

clean:
	rm -rf var
