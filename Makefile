# The two commands of the README:
#   make demo   set up a fresh machine, build the demo city and serve it (map at http://127.0.0.1:8000/map)
#   make test   set up and run the whole test suite
PYTHON ?= python3
VENV   ?= .venv
DB     ?= demo.duckdb
PY      = $(VENV)/bin/python

.PHONY: setup demo test lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml geo/_sqlite_sleep.c
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	@$(PY) -c "import civicgrid.geo._sqlite_sleep" 2>/dev/null || echo "warning: civicgrid.geo._sqlite_sleep \
	was not built (no C compiler or Python headers): a SQLite-catalog store then waits whole seconds when busy; \
	install gcc (and python3-dev for Debian's Python) and run 'rm $(VENV)/.installed; make setup'"
	touch $@

HOST   ?= 127.0.0.1
PORT   ?= 8000

demo: setup
	$(VENV)/bin/civicgrid demo --db $(DB) --force
	$(VENV)/bin/civicgrid info --db $(DB)
	@echo "civicgrid on the demo city: http://$(HOST):$(PORT)/map  (API docs: /docs; Ctrl-C stops)"
	$(VENV)/bin/civicgrid serve --db $(DB) --host $(HOST) --port $(PORT)

test: setup
	$(PY) -m pytest -q -p no:cacheprovider; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

# ruff on the code, tests, benches and notebooks (rules in pyproject.toml, [tool.ruff]), then mypy on the typed
# layers civicgrid.geo and civicgrid.grids ([tool.mypy]; tests/typecheck.py lays the namespace out for it)
lint: setup
	$(VENV)/bin/ruff check .
	$(PY) tests/typecheck.py

bench: setup
	$(PY) bench/import_bench.py

clean:
	rm -rf $(VENV) *.duckdb *.duckdb.lock
