# Two commands do all set-up on a fresh machine:
#   make run    install into .venv and run stridecare on the embedded default (SQLite, no server)
#   make test   install into .venv with test extras, start local Redis/PostgreSQL if down, run the whole suite
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin

.PHONY: run test lint bench install install-test

# uv installs the dependencies (about 5 s where pip takes 35); pip installs uv, and stands in where uv cannot
# reach an index that pip's own configuration names.
$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet uv > $(VENV)/pip.log 2>&1 || true

# The installers' chatter (the build backend's notes on editable installs) goes to a log, shown only when it fails.
INSTALL = @$(BIN)/uv pip install --python $(BIN)/python --quiet -e '.[$(1)]' > $(VENV)/pip.log 2>&1 \
	|| $(BIN)/python -m pip install --quiet -e '.[$(1)]' > $(VENV)/pip.log 2>&1 || (cat $(VENV)/pip.log; exit 1)

install: $(BIN)/python
	$(call INSTALL,fast)

install-test: $(BIN)/python
	$(call INSTALL,test)

run: install
	$(BIN)/stridecare run

# pytest runs three workers (many tests wait on real processes, so two cores carry three) that take queued tests
# from each other when idle, so no worker runs the last minute alone; PYTEST_ARGS adds options (.ci/run: the
# clocks). Every process the suite starts (workers, `stridecare run`, decode servers) reads the project's compiled
# bytecode from __pycache__ (ignored by git) instead of compiling it again, even where the environment says not
# to write it (PYTHONDONTWRITEBYTECODE). mypy (about 25 s of CPU on a fresh clone) checks beside the suite, whose
# tests spend much of their time waiting on real processes; its report follows the suite's, and either failing
# fails the target.
test: install-test
	./scripts/services.sh
	$(BIN)/ruff check stridecare stridecare_app ingest workers recommender delivery tests bench
	$(BIN)/lint-imports
	@$(BIN)/mypy > $(VENV)/mypy.log 2>&1 & mypy=$$!; \
	env -u PYTHONDONTWRITEBYTECODE $(BIN)/pytest -n 3 --dist worksteal $(PYTEST_ARGS); suite=$$?; \
	wait $$mypy; typed=$$?; echo "mypy:"; cat $(VENV)/mypy.log; \
	test $$suite -eq 0 && test $$typed -eq 0

bench: install-test  # the numbers in BENCHMARKS.md; each script's --help tells its options
	$(BIN)/python bench/bench_decode.py
	$(BIN)/python bench/bench_growth.py --n 500 1000 2000 4000
	$(BIN)/python bench/bench_inbox_burst.py --n 400 --rounds 5
	$(BIN)/python bench/bench_web_latency.py --files 400 --events 2000 --clients 50
