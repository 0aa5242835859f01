# Two commands for a fresh machine with Python 3.10+:  `make run`  and  `make test`.
# ROS_DISTRO=jazzy selects the Jazzy wheels instead of Kilted.
PYTHON ?= python3
ROS_DISTRO ?= kilted
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(ROS_DISTRO)
RUN_SECONDS ?= 10

.PHONY: run test lint bench clean venv

venv: $(STAMP)

$(STAMP): requirements/base.txt requirements/test.txt requirements/ros-$(ROS_DISTRO).txt setup.py
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements/ros-$(ROS_DISTRO).txt -r requirements/base.txt -r requirements/test.txt
	$(PY) -m pip install -q --no-deps -e .
	rm -f $(VENV)/.installed-* && touch $@

run: $(STAMP)
	$(VENV)/bin/isaac-perf run --duration $(RUN_SECONDS)

test: $(STAMP)
	$(PY) -m pytest -q test

lint: $(STAMP)
	$(VENV)/bin/ruff check isaac_perf test benchmarks launch scripts

clean:
	rm -rf $(VENV) build install log
