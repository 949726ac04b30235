# Two commands for a new user: `make demo` and `make test`. Both set up .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Reinstall whenever the project's metadata changes.
INSTALLED := $(VENV)/.installed

.PHONY: demo go-deadlock test lint typecheck pytest plots mutate clean

$(INSTALLED): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,plots,backends]'
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
	@echo "== Stage 2 in Go (go/errors_channel, same flags): Go's runtime reports the same deadlock (exit 2) =="
	@$(MAKE) --no-print-directory go-deadlock
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
	@echo "== Stage 4: beyond, the pool itself stops at the 10th error and says what never started =="
	$(BIN)/python -m beyond --jobs 30 --work-seconds 0.05 || test $$? -eq 1
	@echo
	@echo "== The same bug with asyncio: stage 2 with coroutines deadlocks, and the watchdog sees it (exit 2) =="
	$(BIN)/python -m errors_channel --asyncio --error-capacity 1 --work-seconds 0.05 || test $$? -eq 2
	@echo
	@echo "== Benchmarks and plots (python -m plots: quick mode: 81 s on an idle 2-core machine, about 2 minutes at a load average of 14) =="
	$(BIN)/python -m plots

# Go's own report of the stage 2 deadlock, when Go is installed; one line on how to get it if not.
# Built rather than `go run`, because `go run` turns its program's exit status 2 into 1.
go-deadlock:
	@if command -v go >/dev/null 2>&1; then \
		(cd go && go build -o ../build/go/ ./errors_channel) || exit 1; \
		echo "$$ build/go/errors_channel --error-capacity 1   # go/errors_channel, built with $$(go env GOVERSION)"; \
		build/go/errors_channel --error-capacity 1; status=$$?; \
		echo "(exit status $$status)"; test $$status -eq 2; \
	else \
		echo "Go is not installed here, so only Python's report is shown. To see Go's: apt-get install golang-go (or https://go.dev/dl), then make demo again."; \
	fi

test: lint typecheck pytest

lint: $(INSTALLED)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(INSTALLED)
	$(BIN)/mypy

# Two workers, each taking whole files (a file's module-scoped fixtures then run once): most tests
# wait on subprocesses, signals and sleeps rather than compute, so two at a time halve the wall time
# on 2 cores. --deadlock (deadlock_watch/pytest_plugin.py): a test that deadlocks fails at once with
# Go's report, instead of waiting for pytest-timeout; the whole suite runs under it with no report.
pytest: $(INSTALLED)
	$(BIN)/pytest -n 2 --dist loadfile --deadlock

# Not part of `make test`: break the pools and the watchdog one named bug at a time (the table in
# tools/mutate.py) and check that the tests notice each. Several minutes; last line
# `mutants: K killed, S survived`. One mutant: make mutate MUTATE_ARGS='--only NAME'.
mutate: $(INSTALLED)
	$(BIN)/python -m tools.mutate $(MUTATE_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
