# Two commands do all set-up on a fresh Debian machine with Python >= 3.10:
#   make book   -> builds the HTML book into _build/html
#   make test   -> runs the unit tests, doctests and nbval over every notebook in book/
# and, to read and run the chapters yourself:
#   make lab    -> opens JupyterLab on book/, with the project's kernel (python3 of .venv)
# Both create .venv/ (if missing) and install everything the project needs into it.
# Re-running either is fast when nothing changed: installation is keyed on a stamp file
# that is newer than pyproject.toml and constraints.txt.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.minequi-installed
# Jupyter refuses to start as root unless told (containers and CI machines run as root)
ALLOW_ROOT := $(if $(filter 0,$(shell id -u)),--allow-root)

.PHONY: book test unit nbval setup clean bench lab

setup: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@bash .ci/install-system-deps
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade "pip>=24"
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[book,test,bench]"
# the kernel every notebook names (tests/test_environment.py checks that they agree)
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	@touch $(STAMP)

book: $(STAMP)
	$(VENV)/bin/jupyter-book build . --warningiserror --keep-going --quiet
	@echo "Book built: open _build/html/index.html"

# pytest-xdist runs one worker per core (-n auto), each file on one worker (a notebook's cells
# run in order in one kernel); OMP_NUM_THREADS=1 keeps the workers' torch from oversubscribing
# the cores (the notebooks set one thread themselves).
XDIST := -n auto --dist loadfile

unit: $(STAMP)
	OMP_NUM_THREADS=1 $(VENV)/bin/pytest tests minequi --doctest-modules -p no:cacheprovider -q $(XDIST)

nbval: $(STAMP)
	$(VENV)/bin/pytest --nbval --nbval-current-env --nbval-sanitize-with book/nbval-sanitize.cfg -p no:cacheprovider book -q $(XDIST)

test: unit nbval

# JupyterLab on the chapters, every notebook on the kernel `make setup` registered in .venv
lab: $(STAMP)
	$(VENV)/bin/jupyter lab --ServerApp.root_dir=book --MappingKernelManager.default_kernel_name=python3 $(ALLOW_ROOT)

bench: $(STAMP)
	@for f in benchmarks/bench_*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

clean:
	rm -rf _build
