# One command each: `make lm` sets up and runs the main job (trains a character-level LSTM on this
# Python's standard library for a few minutes, then samples from it); `make test` runs the tests.
VENV ?= .venv
PY := $(VENV)/bin/python

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

.PHONY: setup demo lm test bench
setup: $(VENV)/.installed

demo: $(VENV)/.installed
	$(VENV)/bin/rnnkit demo

# The main job needs only NumPy, safetensors and matplotlib (no PyTorch): its own lighter install.
LM_MINUTES ?= 4
LM_OUT ?= runs/lm
$(VENV)/.installed-lm: pyproject.toml
	test -x $(VENV)/bin/python || python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[train,plot]'
	touch $@

# Threads as the machine has them: rnnkit runs its own (one per core) and keeps OpenBLAS on one. The
# OPENBLAS_NUM_THREADS=1 this target once set (from before rnnkit had its own threads) made rnnkit
# take one thread too: 15.2K against 21.5K characters/s on two cores (session 8).
lm: $(VENV)/.installed-lm
	$(VENV)/bin/rnnkit train lm --out $(LM_OUT) --minutes $(LM_MINUTES) --force
	$(VENV)/bin/rnnkit sample $(LM_OUT) --length 600 --temperature 0.7 --seed 0

# The notebooks run at their small setting (about a minute each; notebooks/README.md), every cell
# executed by nbmake in a fresh kernel; their saved outputs are checked by tests/test_notebooks_clean.py.
test: $(VENV)/.installed
	$(PY) -m pytest
	RNNKIT_NOTEBOOK_SMALL=1 $(PY) -m pytest -p no:cacheprovider --nbmake --nbmake-timeout=300 notebooks

bench: $(VENV)/.installed
	$(VENV)/bin/rnnkit bench
