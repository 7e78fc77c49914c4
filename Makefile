# One command to run the demo, one to run the tests (see README.md).
PYTHON_VERSION ?= 3.13
PYTHON_LOW ?= 3.10
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: demo test test-fast lint deps system-deps node-deps client docs dist test-low bench autobahn clean

$(VENV)/.installed: pyproject.toml
	rm -rf $(VENV)
	"$$(scripts/find-python $(PYTHON_VERSION))" -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,docs,release]'
	touch $@

node_modules/.installed: package.json
	npm install --no-audit --no-fund --loglevel=error
	touch $@

deps: $(VENV)/.installed node-deps client

node-deps: node_modules/.installed

## client: copy the Socket.IO browser client (npm socket.io-client) into the package,
## where SocketIO serves it at /socket.io/socket.io.min.js (git ignores the copy)
client: node-deps
	scripts/copy-client

system-deps:
	scripts/system-deps

## demo: install and serve the demo at http://127.0.0.1:5000
demo: $(VENV)/.installed client
	$(PY) examples/demo/app.py

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check $(wildcard src tests bench examples)
	$(VENV)/bin/mypy
	PYTHONPATH=src $(VENV)/bin/lint-imports --no-cache

## test: install everything the tests need, then lint and run the whole suite
test: system-deps deps lint docs dist
	$(PY) -m pytest -q
	$(MAKE) test-low

## test-low: the protocol core and unit tests on the lowest supported Python
test-low:
	rm -rf .venv-low
	"$$(scripts/find-python $(PYTHON_LOW))" -m venv .venv-low
	.venv-low/bin/python -m pip install -q --upgrade pip
	.venv-low/bin/python -m pip install -q -e '.[test]'
	.venv-low/bin/python -m pytest -q -m "not slow" tests/protocol

## docs: build the documentation site into site/ (mkdocs, warnings are errors;
## not --quiet: it hides the warnings that --strict counts)
docs: $(VENV)/.installed
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict --site-dir site

## dist: build the sdist and the wheel (client files included) into dist/ and check them
dist: $(VENV)/.installed client
	rm -rf dist build
	$(PY) -m build -q --outdir dist .
	$(VENV)/bin/twine check --strict dist/*
	$(PY) -c 'import glob, sys, zipfile; names = zipfile.ZipFile(glob.glob("dist/*.whl")[0]).namelist(); \
		missing = [n for n in ("flask_relay/static/socket.io.min.js", "LICENSE") if not any(x.endswith(n) for x in names)]; \
		sys.exit(f"the wheel lacks {missing}" if missing else 0)'

test-fast: $(VENV)/.installed node-deps client
	$(PY) -m pytest -q -x -m "not slow"

## bench: Flask-Relay against its anchors (several minutes; BENCH_ARGS=--quick for a short run)
.venv-bench/.installed: pyproject.toml
	rm -rf .venv-bench
	"$$(scripts/find-python $(PYTHON_VERSION))" -m venv .venv-bench
	.venv-bench/bin/python -m pip install -q --upgrade pip
	.venv-bench/bin/python -m pip install -q -e '.[bench]'
	touch $@

bench: .venv-bench/.installed node-deps
	.venv-bench/bin/python bench/run.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .venv-bench .venv-low node_modules .pytest_cache .mypy_cache .hypothesis \
		site dist build src/flask_relay/static
