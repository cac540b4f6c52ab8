# The two front doors (see README): `make demo` and `make test`.
# Both create the virtual environment on first use; nothing else is needed
# on a fresh machine (the Slurm tests install Debian's Slurm themselves).
PYTHON ?= python3
VENV   ?= .venv
DEMO_DIR ?= demo
RANKS  ?= 3
export OMPI_ALLOW_RUN_AS_ROOT := 1
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM := 1

.PHONY: venv demo test clean

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $@

demo: venv
	$(VENV)/bin/faust-hpc demo $(DEMO_DIR) --ranks $(RANKS)

test: venv
	$(VENV)/bin/python -m pytest -ra -n 2 --dist loadfile

clean:
	rm -rf $(DEMO_DIR) .pytest_cache
