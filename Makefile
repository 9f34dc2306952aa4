# Two set-up commands: `make demo` and `make test`. Both create .venv on first use.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: venv test demo bench lint clean

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip setuptools wheel
	$(BIN)/python -m pip install -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .

# fresh clone -> ViT supernet trained on the embedded MNIST-5k (on digits every subnet scores 99%: a
# front with nothing to choose from) -> Pareto fronts for a Jetson (estimated) and this CPU (measured)
# -> exported subnets under runs/search/<hw>/<stamp>/subnets/
# threads=1: on 2 cores, torch's default of a thread per core ran 15x slower whenever anything else ran
demo: $(STAMP)
	$(BIN)/python -m supernet.train +model=vit_mnist5k data=mnist5k threads=1
	$(BIN)/python -m search.run hw=jetson supernet=runs/train/vit_mnist5k-mnist5k/supernet.pt threads=1
	$(BIN)/python -m search.run hw=local_cpu supernet=runs/train/vit_mnist5k-mnist5k/supernet.pt threads=1

bench: $(STAMP)
	$(BIN)/python scripts/bench_elastic.py
	$(BIN)/python scripts/bench_train.py
	$(BIN)/python scripts/bench_standalone.py
	$(BIN)/python scripts/bench_sampling.py
	$(BIN)/python scripts/bench_quant.py
	$(BIN)/python scripts/bench_search.py

clean:
	rm -rf $(VENV) runs outputs
