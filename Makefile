# Two entry points do all set-up on a fresh machine: `make demo` and `make test`.
# The virtualenv is (re)built whenever pyproject.toml changes.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest fuzz bench schema clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/trigger-mesh demo

test: $(STAMP) lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

pytest: $(STAMP)
	$(BIN)/pytest

# Long fuzzing runs (docs/fuzzing.md): every fuzz test with FUZZ_EXAMPLES examples (each a
# batch of inputs for the cheap parsers); failures are kept in .hypothesis/ and tried first
# next time. `make fuzz FUZZ_EXAMPLES=200000`, or FUZZ_ARGS='-k can' for one area.
FUZZ_EXAMPLES ?= 5000
FUZZ_ARGS ?=
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=fuzz FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/pytest -q \
		--hypothesis-show-statistics tests/test_ble_fuzz.py tests/test_fuzz_*.py $(FUZZ_ARGS)

bench: $(STAMP)
	$(BIN)/python bench/latency.py

schema: $(STAMP)
	$(BIN)/trigger-mesh schema --out docs/schemas

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache *.egg-info
