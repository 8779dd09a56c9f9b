# The two commands a newcomer needs: `make run` and `make test`. Everything else supports them.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000
CHROMIUM := /usr/bin/chromium
PYTEST_ARGS ?=

.PHONY: run test install install-test browser lint lock clean

## Install, migrate, load demo data and bring up portal, worker, beat and the embedded broker.
run: install
	$(BIN)/python manage.py runall --host $(HOST) --port $(PORT)

## Install the test tools and Chromium, then run the whole suite.
test: install-test browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

install: $(VENV)/.installed-base
install-test: install $(VENV)/.installed-test

$(VENV)/.installed-base: requirements/base.txt requirements/lock.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements/base.txt -c requirements/lock.txt
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed-base requirements/test.txt requirements/lock.txt
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements/test.txt -c requirements/lock.txt
	touch $@

## Browser tests drive Debian's Chromium; a downloaded browser is never used. The backup test copies the object store
## with rsync and the database with PostgreSQL's client tools, as docs/operations.md says to.
browser:
	@missing=""; \
	test -x $(CHROMIUM) || missing="$$missing chromium"; \
	command -v rsync >/dev/null || missing="$$missing rsync"; \
	command -v pg_dump >/dev/null || missing="$$missing postgresql-client"; \
	test -z "$$missing" || { \
	  echo "installing Debian's$$missing for the tests"; \
	  SUDO=$$(test "$$(id -u)" = 0 || echo sudo); \
	  $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; }

## ruff (line length included) and mypy over every package; serving/ is checked once it exists.
lint: install-test
	$(BIN)/ruff check .
	$(BIN)/mypy controlplane lineage deployments monitoring workers $(wildcard serving)

## Re-pin every installed package after changing requirements/*.txt.
lock:
	$(BIN)/python -m pip freeze --exclude-editable | grep -v '^-e' > requirements/lock.txt

clean:
	rm -rf $(VENV) staticfiles test-results
