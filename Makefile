# Two entry points do all set-up on a fresh machine: `make demo` and `make test`.
# `make test-fast` is the quick subset to run while working (README.md).
# The virtualenv is (re)built whenever pyproject.toml or constraints.txt changes: `make demo`
# installs the demo's extra only (`.[demo]`), `make test` the dev tools and every extra
# (`.[dev]`), both at the versions constraints.txt pins (`make lock` rewrites it; docs/install.md).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO_STAMP := $(VENV)/.installed-demo
CENTRAL_STAMP := $(VENV)/.installed-central
CONSTRAINTS := constraints.txt
ASYNCAPI_VALIDATOR := tools/asyncapi/node_modules/.package-lock.json
NODE_CAMERA := docs/examples/node-camera/node_modules/.package-lock.json

.PHONY: demo central test test-fast lint typecheck pytest fuzz chaos bench bench-smoke schema lock clean

$(STAMP): pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) -e '.[dev]'
	touch $(STAMP) $(DEMO_STAMP) $(CENTRAL_STAMP)

$(DEMO_STAMP): pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) -e '.[demo]'
	touch $(DEMO_STAMP)

demo: $(DEMO_STAMP)
	$(BIN)/trigger-mesh demo

$(CENTRAL_STAMP): pyproject.toml $(CONSTRAINTS)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c $(CONSTRAINTS) -e '.[demo,central,archive,console]'
	touch $(CENTRAL_STAMP)

# The demo's car bridged to a 3-node NATS cluster, two archivers into the running
# PostgreSQL (TRIGGER_MESH_DB, default postgresql://127.0.0.1:5432/test) and a console;
# it stays up until Ctrl-C (docs/deployment.md).
central: $(CENTRAL_STAMP)
	$(BIN)/trigger-mesh demo --central --stay

# constraints.txt: every package of every extra pinned for Python 3.11 on Linux, resolved
# by uv (its own small virtualenv, .venv-lock). Pins that still fit pyproject.toml are kept:
# adding a dependency adds its pins only. `make lock LOCK_ARGS=--upgrade` moves every pin
# to the newest release within pyproject.toml's bounds.
LOCK_VENV := .venv-lock
UV := $(LOCK_VENV)/bin/uv
LOCK_ARGS ?=
$(UV):
	$(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install --quiet 'uv>=0.9,<1'

lock: $(UV)
	$(UV) pip compile pyproject.toml --all-extras --python-version 3.11 \
		--python-platform linux --custom-compile-command 'make lock' --quiet \
		-o $(CONSTRAINTS) $(LOCK_ARGS)

test: $(STAMP) lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

# The 25 slowest tests are listed at the end: where CI's time goes.
pytest: $(STAMP) $(ASYNCAPI_VALIDATOR) $(NODE_CAMERA)
	$(BIN)/pytest --durations=25

# The AsyncAPI validator of docs/asyncapi.yaml (tests/integration/test_asyncapi.py): the
# @asyncapi/parser pinned by tools/asyncapi/package-lock.json, installed with `npm ci`
# (Node.js and npm: apt-get install -y nodejs npm), again whenever the lock file changes.
$(ASYNCAPI_VALIDATOR): tools/asyncapi/package-lock.json
	cd tools/asyncapi && npm ci
	touch $@

# The Node.js camera written from docs/ (tests/integration/test_node_camera.py): its `mqtt`,
# pinned by docs/examples/node-camera/package-lock.json, installed the same way.
$(NODE_CAMERA): docs/examples/node-camera/package-lock.json
	cd docs/examples/node-camera && npm ci
	touch $@

# The quick subset (under a minute on the 2-core development machine): every unit test and
# every fuzz property with at most FAST_EXAMPLES examples (the "fast" Hypothesis profile,
# tests/conftest.py). No broker, database, browser or subprocess; `make test` runs it all.
FAST_EXAMPLES ?= 25
test-fast: $(STAMP)
	HYPOTHESIS_PROFILE=fast FAST_EXAMPLES=$(FAST_EXAMPLES) $(BIN)/pytest -q tests/unit tests/fuzz

# Long fuzzing runs (docs/fuzzing.md): every fuzz test with FUZZ_EXAMPLES examples (each a
# batch of inputs for the cheap parsers); failures are kept in .hypothesis/ and tried first
# next time. `make fuzz FUZZ_EXAMPLES=200000`, or FUZZ_ARGS='-k can' for one area.
FUZZ_EXAMPLES ?= 5000
FUZZ_ARGS ?=
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=fuzz FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest -q \
		--hypothesis-show-statistics tests/fuzz $(FUZZ_ARGS)

# Long fault-injection runs (docs/reliability.md): CHAOS_TRIALS gateway SIGKILLs (the tests
# run 20), plus the broker, proxy, camera and disk-full scenarios; each prints what it lost.
# `make chaos CHAOS_TRIALS=1000`, CHAOS_SEED=n for another draw, CHAOS_ARGS='-k kill'.
CHAOS_TRIALS ?= 200
CHAOS_SEED ?= 20261122
CHAOS_ARGS ?=
chaos: $(STAMP)
	CHAOS_TRIALS=$(CHAOS_TRIALS) CHAOS_SEED=$(CHAOS_SEED) $(BIN)/pytest -q -s \
		tests/chaos $(CHAOS_ARGS)

bench: $(STAMP)
	$(BIN)/python bench/latency.py

# Every benchmark in bench/ with tiny sizes (docs/benchmarks.md): bench/smoke.py runs each
# as `NAME.py --smoke --json`, which must exit 0 and end with its JSON line; ~95 s. It
# proves the scripts run, not their figures. Helpers run under the benchmark that uses
# them: floor_fleet.py under latency.py (and range.py); soak_fleet.py, soak_floor.py,
# soak_collect.py and soak_report.py under soak.py. Needs mosquitto, the tests'
# PostgreSQL (fleet_scale.py's archive part, central.py), the pinned nats-server (extra
# central: central.py's 3-node cluster, ~6 s), and ffmpeg with GStreamer's RTSP server
# (recorder.py, ~10 s). `make bench-smoke SMOKE_ARGS='--only ble'`.
SMOKE_ARGS ?=
bench-smoke: $(STAMP)
	$(BIN)/python bench/smoke.py $(SMOKE_ARGS)

# The JSON Schemas of every payload, the AsyncAPI document (docs/protocol.md) and the
# console's OpenAPI document; the tests fail while the committed files differ from these.
schema: $(STAMP)
	$(BIN)/trigger-mesh schema --out docs/schemas
	$(BIN)/trigger-mesh asyncapi --out docs/asyncapi.yaml
	$(BIN)/trigger-mesh vectors --out docs/vectors
	$(BIN)/trigger-mesh console-openapi --out docs/console-openapi.json

clean:
	rm -rf $(VENV) $(LOCK_VENV) .mypy_cache .ruff_cache .pytest_cache *.egg-info tools/asyncapi/node_modules \
		docs/examples/node-camera/node_modules
