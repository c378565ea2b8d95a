# The two commands a fresh clone needs:   make demo   |   make test
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.dacl-installed

.PHONY: demo test test-all install bench clean

$(STAMP): pyproject.toml
	@test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q -e '.[dev,avalanche,cluster]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/dacl demo

# pytest exits 5 when it collects nothing: make then fails, so "no tests" never passes silently.
# test: the quick loop (tests marked slow skipped); test-all: everything, what CI runs. Both run one pytest-xdist
# worker per core (-n auto), each on one thread.
test: $(STAMP)
	$(PY) -m pytest -q -n auto tests -m "not slow"

test-all: $(STAMP)
	$(PY) -m pytest -q -n auto tests

bench: $(STAMP)
	$(PY) -m dacl reproduce throughput_cpu $(if $(DATA_ROOT),--data-root $(DATA_ROOT),)

clean:
	rm -rf runs outputs multirun .pytest_cache
