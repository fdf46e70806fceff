# The two commands a newcomer needs: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test lint format bench clean

$(STAMP): pyproject.toml setup.py
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q -e '.[ml,dev]'
	touch $(STAMP)

install: $(STAMP)

# Builds the native block recorder again if its source changed since the install.
src/runtrace/trace/_blockrec.built: src/runtrace/trace/_blockrec.c $(STAMP)
	$(PY) setup.py -q build_ext --inplace
	touch $@

demo: install src/runtrace/trace/_blockrec.built
	$(VENV)/bin/runtrace demo

test: install src/runtrace/trace/_blockrec.built
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(PY) -m pytest -q

format: install
	$(VENV)/bin/ruff format src tests benchmarks
	$(VENV)/bin/ruff check --fix src tests benchmarks

bench: install src/runtrace/trace/_blockrec.built
	$(PY) -m benchmarks.run

clean:
	rm -rf build src/*.egg-info src/runtrace/trace/*.so src/runtrace/trace/_blockrec.built .pytest_cache
