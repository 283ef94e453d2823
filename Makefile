# hostlock: `make demo` and `make test` set everything up on a fresh machine.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV := .venv
PY := $(VENV)/bin/python
NODE_SRC := $(shell find src -name '*.ts' -o -name '*.json' 2>/dev/null)

help:
	@echo "make demo    run concurrent playbooks and draw who held which host when"
	@echo "make test    install everything, build, run TypeScript, Python and molecule tests"
	@echo "             (test-versions: the version-sensitive tests on ansible-core 2.16, 2.17, 2.18, 2.20)"
	@echo "make install put hostlock on PATH (npm install -g of the packed helper) and the collection"
	@echo "             in ~/.ansible/collections (COLLECTIONS_PATH=...; npm's PREFIX=... for the helper)"
	@echo "make bench   run the benchmarks (figures as ratios against anchors)"
	@echo "make stress  long stress variants"
	@echo "make lint    eslint, prettier, ruff, ansible-test sanity (also part of make test; ansible-lint runs in test-py)"
	@echo "make fmt     format TypeScript and Python in place"

node_modules/.stamp: package.json package-lock.json
	npm ci --no-audit --no-fund
	@test -f node_modules/fs-ext/build/Release/fs_ext.node || npm rebuild fs-ext --foreground-scripts
	touch $@

$(VENV)/.stamp: requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r requirements.txt
	touch $@

build: node_modules/.stamp
	node scripts/build.mjs

venv: $(VENV)/.stamp

# The other ansible-core lines the collection supports, each in its own venv with its own Python
# (test/versions/requirements-X.Y.txt); the main .venv above has 2.19 and runs the full suite.
OTHER_VERSIONS := 2.16 2.17 2.18 2.20
.venv-%/.stamp: test/versions/requirements-%.txt scripts/version-venv.sh
	bash scripts/version-venv.sh $*
	touch $@

venvs: $(foreach v,$(OTHER_VERSIONS),.venv-$(v)/.stamp)

# What depends on the ansible-core version, on each other line: the action's tests, the batch
# order (the quick start at a barrier included), the linear_batch scenario and ansible-test sanity.
VERSION_TESTS := $(wildcard test/python/test_action_*.py) test/python/test_batch_order.py
test-version-%: build .venv-%/.stamp
	@echo "=== ansible-core $* ($$(.venv-$*/bin/python --version))"
	.venv-$*/bin/pytest -q $(VERSION_TESTS)
	HOSTLOCK_VENV=$(CURDIR)/.venv-$* bash molecule/run-one.sh linear_batch
	VENV=$(CURDIR)/.venv-$* bash scripts/sanity.sh

test-versions: $(foreach v,$(OTHER_VERSIONS),test-version-$(v))

# Every test has a deadline: a hung test fails at it instead of holding the suite.
TEST_TIMEOUT_MS ?= 300000
test-ts: build
	node --test --test-concurrency=1 --test-timeout=$(TEST_TIMEOUT_MS) build/test/*.test.js

test-py: build venv
	$(VENV)/bin/pytest -q test/python

test-molecule: build venv
	bash molecule/run-all.sh

lint: build venv
	npx eslint .
	npx prettier --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	bash scripts/sanity.sh

fmt: node_modules/.stamp venv
	npx prettier --write .
	$(VENV)/bin/ruff format .

test: lint test-ts test-py test-molecule test-versions

# The helper from its packed tarball, as a user installs it; fs-ext's install
# script builds its native addon (a global install has no package.json to allow it).
COLLECTIONS_PATH ?= $(HOME)/.ansible/collections
NPM_PREFIX := $(if $(PREFIX),--prefix $(PREFIX))
install: build venv
	rm -rf build/pkg && mkdir -p build/pkg
	npm pack --silent --pack-destination build/pkg >/dev/null
	npm install -g $(NPM_PREFIX) --allow-scripts=fs-ext --no-audit --no-fund build/pkg/hostlock-*.tgz
	$(VENV)/bin/ansible-galaxy collection build ansible --output-path build/pkg
	$(VENV)/bin/ansible-galaxy collection install --force -p $(COLLECTIONS_PATH) build/pkg/hostlock-core-*.tar.gz

demo: build venv
	bash demo/demo.sh

bench: build venv
	bash bench/run.sh

stress: build venv
	HOSTLOCK_STRESS=long node --test --test-concurrency=1 --test-timeout=3600000 build/test/*.test.js

clean:
	rm -rf dist build node_modules $(VENV) $(foreach v,$(OTHER_VERSIONS),.venv-$(v))

.PHONY: help build venv venvs test-versions lint fmt install test test-ts test-py test-molecule demo bench stress clean
