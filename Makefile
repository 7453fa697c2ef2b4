# `make demo` and `make test` each set up .venv on a fresh clone (python3 >= 3.11 needed).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DEMO_DIR ?= runs/demo_spiral_vp
DEMO_CONFIG ?= configs/vp/toy_spiral.py

# make demo-digits FAMILY=subvp | ve | rf | edm: the same demo for another SDE family.
FAMILY ?= vp
DIGITS_DIR ?= runs/demo_digits_$(FAMILY)
DIGITS_CONFIG_vp := configs/vp/digits_ddpmpp_continuous.py
DIGITS_CONFIG_subvp := configs/subvp/digits_ddpmpp_continuous.py
DIGITS_CONFIG_ve := configs/ve/digits_ncsnpp_continuous.py
DIGITS_CONFIG_rf := configs/rf/digits_ddpmpp_continuous.py
DIGITS_CONFIG_edm := configs/edm/digits_ddpmpp_continuous.py
DIGITS_CONFIG ?= $(DIGITS_CONFIG_$(FAMILY))
TEXT_DIR ?= runs/demo_digits_text
TEXT_CONFIG ?= configs/text/digits.py

.PHONY: demo demo-digits digits-family demo-text test bench clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

demo: $(VENV)/.installed
	$(PY) train.py --config=$(DEMO_CONFIG) --workdir=$(DEMO_DIR)
	$(PY) sample.py --config=$(DEMO_CONFIG) --workdir=$(DEMO_DIR)

# The model (4,000 steps), its autoguidance guide (nf 8, 500 steps: configs/digits_guide.py), then
# 64 digits guided away from the guide's errors below sigma = 2 (README, "Autoguidance").
digits-family:
	@test -n "$(DIGITS_CONFIG)" || { echo "FAMILY=$(FAMILY): unknown; valid: vp subvp ve rf edm"; exit 2; }

demo-digits: digits-family $(VENV)/.installed
	$(PY) train.py --config=$(DIGITS_CONFIG) --workdir=$(DIGITS_DIR)
	$(PY) train.py --config=configs/digits_guide.py:$(FAMILY) --workdir=$(DIGITS_DIR)_guide
	$(PY) sample.py --config=$(DIGITS_CONFIG) --workdir=$(DIGITS_DIR) --num_samples=64 \
	    --config.sampling.autoguidance_workdir=$(DIGITS_DIR)_guide \
	    --config.sampling.autoguidance_scale=0.3 --config.sampling.autoguidance_sigma_max=2

# A text-conditioned digits model (captions made from labels and measured attributes), then a
# grid for a few prompts, guided (w = 2) against the empty prompt.
demo-text: $(VENV)/.installed
	$(PY) train.py --config=$(TEXT_CONFIG) --workdir=$(TEXT_DIR)
	$(PY) sample.py --workdir=$(TEXT_DIR) --num_samples=40 --config.sampling.guidance_scale=2 \
	    --prompt='a zero' --prompt='a thick seven' --prompt='a thin, slanted one' \
	    --prompt='a thick three'

# Two pytest-xdist workers (CI has 2 cores); a module's tests stay on one worker (its fixtures).
TEST_WORKERS ?= 2
test: $(VENV)/.installed
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadscope

bench: $(VENV)/.installed
	$(PY) benchmarks/samplers.py
	$(PY) benchmarks/likelihood.py
	$(PY) benchmarks/data.py
	$(PY) benchmarks/api_calls.py
	$(PY) benchmarks/train_step.py --configs=tiny/ddpmpp,tiny/ncsnpp

clean:
	rm -rf runs
