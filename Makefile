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

# One BLAS thread: the recurrent products are small, and on a shared machine extra BLAS threads spin
# and can make each step several times slower.
lm: $(VENV)/.installed-lm
	OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 $(VENV)/bin/rnnkit train lm --out $(LM_OUT) --minutes $(LM_MINUTES) --force
	$(VENV)/bin/rnnkit sample $(LM_OUT) --length 600 --temperature 0.7 --seed 0

test: $(VENV)/.installed
	$(PY) -m pytest

bench: $(VENV)/.installed
	$(VENV)/bin/rnnkit bench
