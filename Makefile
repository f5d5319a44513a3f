# The front door. `make run` serves the shop; `make test` runs the test suite.
# Both start an embedded PostgreSQL and Redis unless DATABASE_URL / REDIS_URL are set.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: run test lint audit seed shell clean-data

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $@

run: $(VENV)/.installed
	$(PY) -m shop.launcher run

# The whole suite on one database, then the saga suite again with a database per service.
test: $(VENV)/.installed
	$(PY) -m shop.launcher test $(ARGS)
	SHOP_DB_PER_SERVICE=1 $(PY) -m shop.launcher test -m saga $(ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

audit: $(VENV)/.installed
	$(PY) -m shop.launcher exec -- $(PY) manage.py audit

seed: $(VENV)/.installed
	$(PY) -m shop.launcher exec -- $(PY) manage.py seed $(ARGS)

shell: $(VENV)/.installed
	$(PY) -m shop.launcher exec -- $(PY) manage.py shell

clean-data:
	rm -rf .data
