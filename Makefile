# Two commands for a new user: `make demo` and `make test`. Both set up .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Reinstall whenever the project's metadata changes.
INSTALLED := $(VENV)/.installed

.PHONY: demo test lint typecheck pytest plots clean

$(INSTALLED): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,plots]'
	@touch $(INSTALLED)

demo: $(INSTALLED)
	@echo "== Stage 1: naive (python -m naive) =="
	$(BIN)/python -m naive
	@echo
	@echo "== Stage 2: errors_channel, room for every error (python -m errors_channel) =="
	$(BIN)/python -m errors_channel
	@echo
	@echo "== Stage 2: errors queue of capacity 1: deadlock, reported by the watchdog (exit 2) =="
	$(BIN)/python -m errors_channel --error-capacity 1 || test $$? -eq 2
	@echo
	@echo "== Stage 2: the same run, fixed by reading errors while the workers run =="
	$(BIN)/python -m errors_channel --error-capacity 1 --fix drain-while-waiting
	@echo
	@echo "== Stage 3: robust, every task keeps its own error (python -m robust; exit 1: tasks failed) =="
	$(BIN)/python -m robust || test $$? -eq 1
	@echo
	@echo "== Stage 3: 30 jobs, the caller gives up after 10 errors =="
	$(BIN)/python -m robust --jobs 30 --work-seconds 0.05 || test $$? -eq 1
	@echo
	@echo "== Benchmarks and plots (python -m plots: quick mode, about a minute) =="
	$(BIN)/python -m plots

test: lint typecheck pytest

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(INSTALLED)
	$(BIN)/mypy

pytest: $(INSTALLED)
	$(BIN)/pytest

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
