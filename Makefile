# One-command setup, demo and tests. Everything comes from the package registry (pip).
#   make demo   -> set up .venv (first time) and run the quick-start (train + COCO eval + overlays)
#   make test   -> set up .venv (first time) and run the test suite
#   make check-wheel -> the built wheel works alone (fresh venv, core dependencies only)
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
CONSTRAINTS := requirements/constraints.txt
STAMP  := $(VENV)/.setup-done
# Every pip call (including the one inside dev/install_detectron2.sh) resolves within the
# tested versions.
export PIP_CONSTRAINT := $(abspath $(CONSTRAINTS))

.PHONY: setup demo test check-wheel clean-venv

setup: $(STAMP)

$(STAMP): setup.py $(CONSTRAINTS) dev/install_detectron2.sh dev/detectron2_C_standin.py
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@# torch first: Detectron2's setup.py imports it
	$(PIP) install --quiet torch torchvision "setuptools>=77.0.3,<82" wheel
	bash dev/install_detectron2.sh $(PY)
	$(PIP) install --quiet -e ".[all]"
	$(PIP) check
	@touch $(STAMP)
	@echo "Environment ready in $(VENV)"

demo: setup
	$(PY) tools/quickstart.py $(ARGS)

test: setup
	$(PY) -m pytest -q $(PYTEST_ARGS)

# The wheel alone: built, installed with only the core dependencies into a fresh venv, trains the
# LMSF-A instant config and runs the demo; a baseline fails with one line naming its extra.
check-wheel: setup
	bash dev/check_wheel.sh $(PY)

clean-venv:
	rm -rf $(VENV)
