# The README's commands. `make demo` and `make test` install first when needed.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.install-stamp
DATA   := data/fashion-mnist

.PHONY: install test test-fast demo bench data clean device-emulator test-device

install: $(STAMP)

# Re-installs only when pyproject.toml changes (a second `make install` takes ~1 s).
$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $(STAMP)

# Real Fashion-MNIST (IDX, gzipped) from Debian's package dataset-fashion-mnist; offline, no root needed
# for the download itself (apt lists are refreshed first when they are missing and we are root).
data: $(DATA)/train-images-idx3-ubyte.gz

$(DATA)/train-images-idx3-ubyte.gz:
	@bash scripts/fetch-fashion-mnist.sh $(DATA)

test: install data
	@bash scripts/ensure-test-deps.sh
	$(VENV)/bin/ruff check src tests benchmarks
	$(PY) -m pytest -q $(PYTEST_ARGS)

# The inner loop: lint and the tests not marked slow (about 3 minutes here).
test-fast: install data
	@bash scripts/ensure-test-deps.sh
	$(VENV)/bin/ruff check src tests benchmarks
	$(PY) -m pytest -q -m "not slow" $(PYTEST_ARGS)

# The main job on the embedded default: real Fashion-MNIST, the `local` device (budget: 200k params,
# latency, memory, size), the preset whose pick beat random networks of that budget (docs/search-quality.md);
# every stage real. A rerun resumes (finished stages are reused).
demo: install data
	$(VENV)/bin/dcanas run --device local --dataset fashion-mnist --preset nb201-zerocost --out runs/demo --resume

bench: install data
	$(PY) benchmarks/record.py search_cost
	$(PY) benchmarks/record.py search_profile
	$(PY) benchmarks/record.py evaluate_cost
	$(PY) benchmarks/record.py budget_precision
	$(PY) benchmarks/size_model.py
	$(PY) benchmarks/latency_model.py --repeat 2
	$(PY) benchmarks/latency_model.py --repeat 2 --device local-latency --out benchmarks/latency_model.local-latency.last.md
	$(PY) benchmarks/record.py latency_additivity
	$(PY) benchmarks/record.py eq3_ablation --span lug --seeds 2
	$(PY) benchmarks/record.py own_data --per-class 200
	$(PY) benchmarks/record.py paper_search_cost
	$(PY) benchmarks/record.py executor
	$(PY) benchmarks/record.py profiler_overhead
	$(PY) benchmarks/search_vs_random.py  # ~2 h on 2 cores: cpu-demo's search, 22 networks trained with cpu-rank
	$(PY) benchmarks/collect.py  # docs/benchmarks.md from the results above

# Opt-in: an emulated Raspberry Pi 4 userland (arm64 Debian under qemu-user) with sshd on 127.0.0.1:2222.
device-emulator:
	bash scripts/device-emulator.sh start

test-device: install device-emulator
	DCANAS_EMULATED_PI=1 $(PY) -m pytest -q tests/test_device_emulated.py

clean:
	rm -rf $(VENV) .pytest_cache runs
