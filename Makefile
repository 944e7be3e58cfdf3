# event-router: the two commands are `make demo` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp
# Python files outside the package that lint also covers (hack/testenv has no .py suffix).
LINT_EXTRA := hack/testenv hack/testenvkit

.PHONY: help deps install tools image lint test test-unit testenv-up testenv-down testenv-status demo demo-cluster bench

help:
	@echo "make deps            apt-get install the Debian packages the node, the image and promtool need"
	@echo "                     (only the missing ones: hack/deps.sh)"
	@echo "make install         create $(VENV) and pip install -e '.[dev]' (skipped when up to date)"
	@echo "make test            install + build test tools + lint + the whole pytest suite (unit + integration)"
	@echo "make test-unit       only the tests not marked integration (no control plane needed)"
	@echo "make lint            ruff check, ruff format --check, mypy"
	@echo "make tools           build etcd, kube-apiserver, kube-controller-manager, vcsim and the node's"
	@echo "                     kubelet, kube-scheduler, kube-proxy, coredns, pause, kubectl, helm (cached)"
	@echo "make image           build the image on a Debian base made here, load it into a running node"
	@echo "make testenv-up      start the real test control plane + node + vcsim and keep it up"
	@echo "make testenv-down    stop it (hack/testenv down)"
	@echo "make demo            run hack/demo.sh (the operator with in-process routers)"
	@echo "make demo-cluster    the same story with router pods on the test node (hack/demo-cluster.sh)"
	@echo "make bench           run every bench/*.py module"

deps:
	@bash hack/deps.sh

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $@

tools:
	bash hack/build-tools.sh all

image: deps
	bash hack/image.sh

lint: install
	$(VENV)/bin/ruff check . $(LINT_EXTRA)
	$(VENV)/bin/ruff format --check . $(LINT_EXTRA)
	$(VENV)/bin/mypy
	$(VENV)/bin/mypy $(LINT_EXTRA)

# pytest exit code 5 means "no tests were collected", or (tests/conftest.py) that every
# collected test was skipped: a failure, never a pass.
# The integration tests run on the test node (ER_TESTENV_NODE=1): real pods of our image.
test: deps install tools image lint
	@ER_TESTENV_NODE=1 $(VENV)/bin/pytest -ra $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: no test ran (none collected, or all skipped)" >&2; exit 1; fi; exit $$rc

test-unit: install
	@$(VENV)/bin/pytest -ra -m "not integration" $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test-unit: no test ran (none collected, or all skipped)" >&2; exit 1; fi; exit $$rc

TESTENV_UP_ARGS ?= --node
testenv-up: deps
	$(PYTHON) hack/testenv up $(TESTENV_UP_ARGS)

testenv-down:
	$(PYTHON) hack/testenv down

testenv-status:
	$(PYTHON) hack/testenv status

demo-cluster: deps install tools image
	bash hack/demo-cluster.sh

demo: deps
	@if [ -f hack/demo.sh ]; then bash hack/demo.sh; \
	else echo "make demo: hack/demo.sh does not exist yet (it comes with the operator work); nothing was run" >&2; exit 1; fi

# routers run from compiled bytecode, as from the image or a pip install (a checkout run with
# PYTHONDONTWRITEBYTECODE=1 would compile every module at each start: ~0.7 MiB more RSS)
bench: install
	@$(PY) -m compileall -q event_router
	@mods=$$(ls bench/*.py 2>/dev/null | grep -v '/_[^/]*\.py$$' | sed 's#^bench/\(.*\)\.py$$#bench.\1#'); \
	if [ -z "$$mods" ]; then echo "make bench: no bench/*.py modules exist yet" >&2; exit 1; fi; \
	rc=0; for m in $$mods; do echo "== $$m" >&2; $(PY) -m $$m || { echo "make bench: $$m failed" >&2; rc=1; }; done; exit $$rc
