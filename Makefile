# `make demo` and `make test` are the only set-up a fresh machine needs:
# both create .venv (if absent), install the pinned requirements and the rkif package (editable) first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench install clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(PY) src/demo.py

# Two workers, one thread each: on 2 cores two torch processes with default threading slow each
# other down many times over, and one thread per tiny model loses little.
test: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n 2 tests

bench: $(STAMP)
	$(PY) scripts/bench_kif_overhead.py
	$(PY) scripts/bench_generation.py

clean:
	rm -rf output/demo output/demo_seed*
