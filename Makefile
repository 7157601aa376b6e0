# One entry point for humans and CI. Works on a fresh machine: Python 3.11+, pip.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Meltano lives in a venv of its own; it installs the plugins from this
# repository (pip_url: -e .) into .meltano/ with uv.
MELTANO_VENV ?= .venv-meltano
MELTANO := $(MELTANO_VENV)/bin/meltano

.PHONY: install meltano test lint unit demo bench clean readme meltano-yml soak

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

$(MELTANO_VENV)/.installed:
	$(PYTHON) -m venv $(MELTANO_VENV)
	$(MELTANO_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(MELTANO_VENV)/bin/python -m pip install --quiet 'meltano==4.4.1' 'uv>=0.5'
	touch $@

# The plugins are installed editable, so pip compiled none of their modules;
# with PYTHONDONTWRITEBYTECODE set (CI, containers) every plugin process would
# compile them from source again (~40 ms a start). Refreshed on each make.
install: $(BIN)/.installed
	@$(BIN)/python -m compileall -q tap_redis_stream target_batched_postgres

meltano: $(MELTANO_VENV)/.installed install
	@# uv compiles no bytecode by default; with PYTHONDONTWRITEBYTECODE set (CI,
	@# containers) each plugin run would compile its imports again, ~0.8 s of CPU.
	UV_COMPILE_BYTECODE=1 PATH="$(CURDIR)/$(MELTANO_VENV)/bin:$$PATH" $(MELTANO) install

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python tools/readme_settings.py --check
	$(BIN)/python tools/meltano_yml.py --check

# pytest exits 5 when no test ran; make treats that (any non-zero) as failure.
test: lint meltano
	MELTANO_BIN="$(CURDIR)/$(MELTANO)" $(BIN)/pytest

unit: install
	$(BIN)/pytest tests/unit

# Crash soak: SIGKILL tap/target at KILLS random points (plus PostgreSQL, Redis and
# Kafka crashes and a `meltano run` kill), rerun from the last STATE, check nothing
# was lost or duplicated. The CI-sized run is tests/integration/test_faults.py.
KILLS ?= 100
soak: meltano
	MELTANO_BIN="$(CURDIR)/$(MELTANO)" $(BIN)/python -m tests.fault_harness --kills $(KILLS)

# Side by side with the peers, in one run (several minutes; see bench/compare.py).
bench: meltano
	MELTANO_BIN="$(CURDIR)/$(MELTANO)" $(BIN)/python -m bench.compare $(BENCH_ARGS)

demo: meltano
	PATH="$(CURDIR)/$(MELTANO_VENV)/bin:$$PATH" MELTANO_BIN="$(CURDIR)/$(MELTANO)" $(BIN)/python tools/demo.py

readme: install
	$(BIN)/python tools/readme_settings.py

meltano-yml: install
	$(BIN)/python tools/meltano_yml.py

clean:
	rm -rf $(VENV) $(MELTANO_VENV) .meltano .pytest_cache .mypy_cache .ruff_cache
