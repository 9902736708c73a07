# Herald: run it, test it. `make help` lists the targets.
#
#   make run                    Redis + PostgreSQL under .data/, migrations, demo agent, Herald on :8080
#   make test                   build and run every test
#   make test FILTER=Webhook    only the tests matching (swift test --filter)
#   make test ARGS="--parallel" any other swift test arguments

SHELL := /bin/bash
FILTER ?=
ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help run test build services status stop cluster cluster-stop clean

help: ## this list
	@echo "Herald - make targets:"
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):.*## /  \1\t/' | expand -t 16
	@echo "  (make test FILTER=Name runs only the matching tests; ARGS=... passes more to swift test)"

run: ## install deps, build, start Redis/PostgreSQL, migrate, run the demo agent and Herald (:8080)
	@bash scripts/run.sh

test: ## install deps, build, run all tests (FILTER=..., ARGS=...)
	@bash scripts/test.sh $(if $(FILTER),--filter '$(FILTER)') $(ARGS)

build: ## install deps, debug build of everything (swift build)
	@bash scripts/install-deps.sh
	swift build

services: ## start Redis and PostgreSQL under .data/ (ports 6390, 5440)
	@bash scripts/services.sh start
	@bash scripts/services.sh env

status: ## are the .data/ services running?
	@bash scripts/services.sh status

stop: ## stop Redis and PostgreSQL (data is kept)
	@bash scripts/services.sh stop

cluster: ## start a local 3-master/3-replica Redis Cluster under .data/cluster (ports 7001-7006)
	@bash scripts/redis-cluster.sh start
	@bash scripts/redis-cluster.sh env

cluster-stop: ## stop the local Redis Cluster (its nodes.conf files are kept)
	@bash scripts/redis-cluster.sh stop

clean: ## stop the services and the cluster, remove .build and .data
	-@bash scripts/services.sh stop
	-@bash scripts/redis-cluster.sh stop
	rm -rf .build .data
