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

# Q reaches loader.sql through the environment, as typed: make neither expands it ($(value)
# and := keep its $ signs) nor pastes it into a shell command (quotes, backticks, $ and #
# stay SQL)
ifdef Q
override Q := $(value Q)
export Q
endif

sql: $(STAMP)  # make sql Q="SELECT ..." [ARGS=--json] (or the SQL on stdin): raw read-only SQL, local loader only
	@if [ -n "$${Q+set}" ]; then printenv Q | $(PY) -m loader.sql $(ARGS); else $(PY) -m loader.sql $(ARGS); fi

sample: $(STAMP)
	$(PY) -m stack.sample

replay-dlq: $(STAMP)
	$(PY) -m stack.replay_dlq $(ARGS)

fanout-status: $(STAMP)  # make fanout-status ID=<notification id>: a fan-out's progress
	@test -n "$(ID)" || (echo "usage: make fanout-status ID=<notification id>" >&2; exit 2)
	@$(PY) -m stack.fanout_status "$(ID)" $(ARGS)

# SCOPE and AUDIENCE take several values, space-separated (python -m gateway.api_keys create --help)
api-key: $(STAMP)  # make api-key NAME=svc [SCOPE='social.* admin'] [AUDIENCE='topic:sports'] [RATE=100] [BURST=1000]: a producer API key, shown once
	@test -n "$(NAME)" || (echo "usage: make api-key NAME=<name> [SCOPE='social.* admin ...'] [AUDIENCE='topic:sports followers:* ...'] [RATE=notifications/s] [BURST=notifications]; details: $(PY) -m gateway.api_keys create --help" >&2; exit 2)
	@$(PY) -m gateway.api_keys create '$(NAME)' $(foreach s,$(or $(SCOPE),*),--scope '$(s)') $(foreach a,$(AUDIENCE),--audience '$(a)') $(if $(RATE),--rate '$(RATE)') $(if $(BURST),--burst '$(BURST)')

user-token: $(STAMP)  # make user-token USER=u1 [TTL=3600]: a signed token for the people's API
	@# USER must come from the command line: the shell's own $$USER is not a user id
	@test "$(origin USER)" = "command line" -a -n "$(USER)" || \
		(echo "usage: make user-token USER=<user id> [TTL=seconds]" >&2; exit 2)
	@$(PY) -m gateway.user_tokens "$(USER)" $(if $(TTL),--ttl $(TTL))

clean:
	rm -rf var
