# The README's commands. Every target sets up what it needs first (make env).
SHELL := /bin/bash
VENV  := .venv
BIN   := $(VENV)/bin
# Open MPI refuses to run as root without these; harmless for other users.
export OMPI_ALLOW_RUN_AS_ROOT := 1
export OMPI_ALLOW_RUN_AS_ROOT_CONFIRM := 1
export TF_CPP_MIN_LOG_LEVEL := 2
export PATH := $(CURDIR)/$(BIN):$(PATH)

.PHONY: env demo test test-unit test-mpi fault-test bench container-test slurm-test cluster-test clean

env:                ## build or reuse the pinned environment (.venv), check Horovod
	@bash scripts/setup_env.sh

demo: env           ## end-to-end on built-in data, 2 MPI ranks; writes demo/summary.json
	@bash scripts/demo.sh

test: env           ## the test suite: unit, 2-rank MPI, command line
	$(BIN)/pytest -q -m "not slurm and not container and not cluster and not faults" tests

fault-test: env     ## real faults (kills, signals, a full tmpfs, read-only mounts); needs root for the mounts
	$(BIN)/pytest -q -m faults tests/faults

bench: env          ## every benchmark; results in bench/results/*.json
	@for b in pipeline step scaling input sample-scaling write cmb-scaling; do \
	  $(BIN)/cosmotrain bench $$b | tail -n 1; done

container-test: env ## build docker/Dockerfile.cpu on a local Debian base, run the SIF %test in it
	@bash scripts/container/test.sh

slurm-test: env     ## real slurmctld + slurmd on localhost, submit every job script
	@bash scripts/slurm/test.sh

cluster-test: env   ## a 4-node SLURM cluster on this machine (namespaces): jobs across nodes, node loss, staging
	@bash scripts/cluster/test.sh

clean:
	rm -rf demo build src/*.egg-info .pytest_cache
