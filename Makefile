# Two commands on a fresh machine:  `make run`  (the service)  and  `make test`.
VENV ?= .venv
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(abspath node_modules/.bin):$(PATH)

.PHONY: run test test-fast lint typecheck proto bootstrap bench bench-quick soak clean

bootstrap:
	@scripts/bootstrap.sh

run: bootstrap  ## export (or demo), embedded Triton, front-end on 127.0.0.1:50051
	$(BIN)/sentiment-server up $(ARGS)

lint: bootstrap
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	scripts/check_buf.sh

typecheck: bootstrap  ## strict for the code; tests and bench may leave functions unannotated
	$(BIN)/mypy
	$(BIN)/mypy --allow-untyped-defs --allow-incomplete-defs --allow-untyped-calls --no-warn-unused-ignores tests bench

test: lint typecheck  ## everything CI runs, real Triton end to end included
	$(BIN)/python -m pytest -q -p no:cacheprovider

test-fast: bootstrap  ## no Triton, no torch: the servicer in-process on port 0 around a fake backend (under a minute)
	$(BIN)/python -m pytest -q -p no:cacheprovider tests/fast

proto: bootstrap  ## regenerate the Python stubs after editing proto/
	scripts/gen_proto.sh

bench: bootstrap
	$(BIN)/python bench/run.py

bench-quick: bootstrap
	$(BIN)/python bench/run.py --quick

# make soak SOAK_ARGS="--full-size --duration-s 1800 --warmup-s 300"
soak: bootstrap
	$(BIN)/python bench/soak.py $(SOAK_ARGS)

clean:
	rm -rf $(VENV) node_modules .mypy_cache .ruff_cache
