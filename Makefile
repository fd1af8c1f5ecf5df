# Two-command quick start: `make demo` and `make test`. Both create/reuse .venv with the pinned dependency set.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# nnU-Net finds SSLViTTrainer & co. through this folder (see README, 'Folders').
export nnUNet_extTrainer ?= $(CURDIR)/nnssl_trainers/ext

.PHONY: venv demo test lint image clean

venv: $(STAMP)

$(STAMP): setup.py constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	touch $(STAMP)

demo: venv
	$(BIN)/nnssl_demo

test: venv
	$(BIN)/python -m pytest tests

lint: venv
	$(BIN)/ruff check nnssl nnssl_trainers tests benchmarks setup.py
	$(BIN)/hadolint Dockerfile

image:
	docker build -t nnssl .

clean:
	rm -rf demo_output
