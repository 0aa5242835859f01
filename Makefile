# Two commands for a fresh machine:  `make run`  and  `make test`.
# The ROS 2 wheels on PyPI are built for CPython 3.11 and 3.12 only: the first of python3.12, python3.11,
# python3 that is one of those is used (PYTHON=... overrides). ROS_DISTRO=jazzy selects the Jazzy wheels,
# in their own venv (.venv-jazzy), instead of Kilted (.venv).
ROS_DISTRO ?= kilted
SUPPORTED_PYTHONS := 3.11 3.12
ifeq ($(ROS_DISTRO),kilted)
VENV ?= .venv
else
VENV ?= .venv-$(ROS_DISTRO)
endif
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(ROS_DISTRO)
RUN_SECONDS ?= 10

# A python whose X.Y is supported; pyenv shims exist for versions that are not selected, so each candidate
# is run, not just looked up.
find_python = $(firstword $(foreach p,python3.12 python3.11 python3,$(shell $(p) -c 'import sys; \
  print("$(p)" if "%d.%d" % sys.version_info[:2] in "$(SUPPORTED_PYTHONS)".split() else "")' 2>/dev/null)))
PYTHON ?= $(call find_python)

.PHONY: run test lint bench clean venv

venv: $(STAMP)

$(STAMP): requirements/base.txt requirements/test.txt requirements/ros-$(ROS_DISTRO).txt setup.py
	@test -x $(PY) || test -n "$(PYTHON)" || { echo "error: no Python 3.12 or 3.11 found (python3 is" \
	  "$$(python3 -V 2>&1 | cut -d' ' -f2)). The ROS 2 wheels on PyPI exist for CPython 3.11 and 3.12 only:" \
	  "install one (apt install python3.12-venv, or pyenv install 3.12) or run make PYTHON=/path/to/python3.12"; \
	  exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	grep -vE '^[^#].*# no-deps$$' requirements/test.txt > $(VENV)/test-requirements.txt
	$(PY) -m pip install -q -r requirements/ros-$(ROS_DISTRO).txt -r requirements/base.txt \
	  -r $(VENV)/test-requirements.txt
	grep -E '^[^#].*# no-deps$$' requirements/test.txt | cut -d' ' -f1 | xargs $(PY) -m pip install -q --no-deps
	$(PY) -m pip install -q --no-deps -e .
	rm -f $(VENV)/.installed-* && touch $@

run: $(STAMP)
	$(VENV)/bin/isaac-perf run --duration $(RUN_SECONDS)

test: $(STAMP)
	$(PY) -m pytest -q test

lint: $(STAMP)
	$(VENV)/bin/ruff check isaac_perf test benchmarks launch scripts

clean:
	rm -rf .venv .venv-* build install log
