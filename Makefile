# m3fmarl — the two commands for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
export OMP_NUM_THREADS ?= 1
export MPLBACKEND ?= Agg

.PHONY: demo test test-fast lint bench reproduce clean-venv

# torch first (the CPU build on disk; any other torch pulls GBs of CUDA), then the package.
$(VENV)/done: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e ".[rl,test]"
	touch $@

demo: $(VENV)/done
	$(BIN)/m3fmarl demo

# pytest exits 5 when it collects no test; that is not a failure of the suite.
test: $(VENV)/done
	$(BIN)/pytest -q -n 2 || [ $$? -eq 5 ]

test-fast: $(VENV)/done
	$(BIN)/pytest -q -m "not slow" || [ $$? -eq 5 ]

# Every paper table and figure at the reduced budget into results/reduced/ (hours on 2 cores;
# rerun to resume).  BUDGET=paper on a cluster: see docs/cluster.md.
BUDGET ?= reduced
reproduce: $(VENV)/done
	$(BIN)/m3fmarl reproduce --budget $(BUDGET)

lint: $(VENV)/done
	$(BIN)/ruff check .

bench: $(VENV)/done
	$(BIN)/m3fmarl bench envs --variant reference

clean-venv:
	rm -rf $(VENV)
