# Two entry points: `make demo` (the main job) and `make test` (the whole suite). Both set up .venv.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.fastvision-installed
FMNIST := /usr/share/datasets/fashion-mnist

.PHONY: install demo test lint typecheck bench fashion-data clean

$(STAMP): setup.py pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

# The real Fashion-MNIST IDX files from Debian; without root, `fastvision demo` downloads them instead.
fashion-data:
	@test -f $(FMNIST)/train-images-idx3-ubyte.gz || \
	  { [ "$$(id -u)" = 0 ] && (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist) \
	    || echo "note: could not apt-get install dataset-fashion-mnist; fastvision will look in its cache"; }

demo: install fashion-data
	$(BIN)/fastvision demo

lint: install
	$(BIN)/ruff check fastvision tests bench
	$(BIN)/ruff format --check fastvision tests bench
	$(BIN)/mypy fastvision

# mypy alone (config in pyproject.toml; also part of `lint`).
typecheck: install
	$(BIN)/mypy fastvision

test: lint fashion-data
	$(BIN)/python -m pytest -q -p no:cacheprovider

bench: install
	$(BIN)/python bench/pipeline.py
	$(BIN)/python bench/overhead.py

clean:
	rm -rf $(VENV) build *.egg-info
