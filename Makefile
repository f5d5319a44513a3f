# The front door. `make run` serves the shop; `make test` runs the test suite.
# Both start an embedded PostgreSQL and Redis unless DATABASE_URL / REDIS_URL are set.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: run test test-rabbitmq lint audit seed shell clean-data compare bench-saga bench schema-fuzz

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

run: $(VENV)/.installed
	$(PY) -m runtime.launcher run

# The whole suite on one database, then the saga suite again with a database per service, then the 2pc suite
# (ORDER_FLOW=2pc, which sets up a database per service itself; its tests are skipped in the first pass).
# pytest's exit 5, "no test selected", is fine in those two when ARGS picks none of their tests.
# Then the RabbitMQ pass (test-rabbitmq).
test: $(VENV)/.installed
	$(PY) -m runtime.launcher test $(ARGS)
	SHOP_DB_PER_SERVICE=1 $(PY) -m runtime.launcher test -m saga $(ARGS); rc=$$?; [ $$rc -eq 0 ] || [ $$rc -eq 5 ]
	ORDER_FLOW=2pc $(PY) -m runtime.launcher test -m twopc $(ARGS); rc=$$?; [ $$rc -eq 0 ] || [ $$rc -eq 5 ]
	$(MAKE) --no-print-directory test-rabbitmq

# The saga tests that concern the broker, with RabbitMQ as the broker (CELERY_BROKER_URL=amqp://...) on a vhost
# of their own, created and removed by runtime/rabbitmq.py: the order saga end to end, the relay, the crash and
# redelivery tests, the RabbitMQ tests. Skipped, saying so, when nothing answers on RABBITMQ_URL
# (default amqp://guest:guest@127.0.0.1:5672). RABBITMQ_TESTS=sagas/tests runs the whole saga suite there.
RABBITMQ_TESTS ?= sagas/tests/test_rabbitmq.py sagas/tests/test_relay.py sagas/tests/test_order_saga.py \
	sagas/tests/test_crashes.py
test-rabbitmq: $(VENV)/.installed
	$(PY) -m runtime.rabbitmq -- $(PY) -m runtime.launcher test -m saga $(RABBITMQ_TESTS) $(ARGS); rc=$$?; \
		[ $$rc -eq 0 ] || [ $$rc -eq 5 ]

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

audit: $(VENV)/.installed
	$(PY) -m runtime.launcher exec -- $(PY) manage.py audit

seed: $(VENV)/.installed
	$(PY) -m runtime.launcher exec -- $(PY) manage.py seed $(ARGS)

shell: $(VENV)/.installed
	$(PY) -m runtime.launcher exec -- $(PY) manage.py shell

# Load-test each order flow in turn and write reports/<timestamp>/report.{md,html} (loadtests/compare.py).
# e.g. make compare MODES=atomic USERS=10 DURATION=20s ARGS="--mix tok_decline=0.1 --processes"
compare: $(VENV)/.installed
	$(PY) -m loadtests.compare --bench $(if $(MODES),--modes $(MODES))$(if $(USERS), --users $(USERS))$(if $(DURATION), --duration $(DURATION)) $(ARGS)

# What an order costs: a bare one-INSERT endpoint, atomic, saga and choreography back to back, the same load on each
# (loadtests/bench.py); exits 1 when a verdict falls short. wrk drives the load (installed with apt-get when
# missing and we are root); without it, a Python client does.
bench: $(VENV)/.installed
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null 2>&1; } || \
		echo "wrk is not installed: the Python load generator drives the bench"
	$(PY) -m loadtests.bench $(ARGS)

# Saga mode on its own database: POST-to-final latency, completed sagas/s, relay drain vs bare publish.
bench-saga: $(VENV)/.installed
	$(PY) -m runtime.launcher exec -- $(PY) -m loadtests.saga_bench $(ARGS)

# The fault matrix (loadtests/chaos): kills, restarts and outages under load, one verdict line per scenario,
# exit 1 if any falls short. Runs on its own embedded PostgreSQL and Redis in .data/chaos (started, restarted
# and stopped by the driver), never on DATABASE_URL / REDIS_URL nor the shared .data servers.
# make chaos ARGS="--short" (about 5 minutes; also CHAOS_SHORT=1), ARGS="--only worker-sigkill,poison-message"
.PHONY: chaos
chaos: $(VENV)/.installed
	$(PY) -m loadtests.chaos $(ARGS)

# Schemathesis against the live schema, atomic, saga and choreography in turn, on a database of its own (loadtests/schema_fuzz.py);
# exits 1 on any 5xx or answer the schema does not describe. About a minute. EXAMPLES= per operation.
schema-fuzz: $(VENV)/.installed
	$(PY) -m runtime.launcher exec -- $(PY) -m loadtests.schema_fuzz$(if $(EXAMPLES), --examples $(EXAMPLES)) $(ARGS)

clean-data:
	rm -rf .data
