# Set-up and everyday commands. `make demo` and `make test` work on a fresh machine (Python 3.11).
PYTHON ?= python3.11
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test test-all test-under-load bench clean

$(STAMP): setup.py
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test,analyst]'
	touch $(STAMP)

demo: $(STAMP)  ## run the whole pipeline on its embedded synthetic defaults into ./tipline-out
	$(VENV)/bin/tipline run

test: $(STAMP)  ## the test suite (the Pub/Sub tests start the installed emulator themselves)
	$(VENV)/bin/pytest -n 2 -q

test-all: $(STAMP)  ## the suite plus the long fuzz and soak profile
	$(VENV)/bin/pytest -n 2 -q --run-slow

test-under-load: $(STAMP)  ## the suite with every core saturated by a background CPU load (tests/load.sh)
	tests/load.sh start
	$(VENV)/bin/pytest -n 2 -q; status=$$?; tests/load.sh stop; exit $$status

clean:
	rm -rf tipline-out build *.egg-info
