# Two commands matter: `make demo` and `make test`. Both create .venv (Python >= 3.11)
# and install the package with its test extras first, so they work on a fresh clone.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO   ?= demo_out
export TF_USE_LEGACY_KERAS := 1
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: venv demo test bench lint clean

venv: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 needed"'
	@echo "Creating $(VENV) and installing leukemia_tf with TensorFlow 2.21 (a ~600 MB"
	@echo "download the first time, ~2.6 GB installed; 1-5 minutes). Later runs skip this."
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip setuptools wheel
	@$(BIN)/python -m pip install --quiet --progress-bar off -e '.[dev,pretrained]'
	@$(BIN)/python -c 'import tensorflow as tf, tf_keras; print("installed: TensorFlow", tf.__version__, "tf_keras", tf_keras.__version__)' 2>/dev/null
	@touch $(STAMP)

# The main job end to end on an embedded synthetic C-NMC-shaped tree:
# generate -> convert -> verify -> train -> evaluate -> report. Seeds are fixed, training
# is --deterministic and float32 (`auto` would pick bf16 on CPUs with AMX), so the demo's
# numbers and pictures regenerate exactly on the same CPU family and TensorFlow build.
demo: $(STAMP)
	rm -rf $(DEMO)
	$(BIN)/leukemia-synthetic --output_dir=$(DEMO)/data --seed=0
	$(BIN)/leukemia-convert --data_dir=$(DEMO)/data/C-NMC_Leukemia \
	    --output_dir=$(DEMO)/records
	$(BIN)/leukemia-convert --output_dir=$(DEMO)/records --verify
	$(BIN)/leukemia-train --records_dir=$(DEMO)/records --model_dir=$(DEMO)/model \
	    --model=resnet_small --image_size=96 --epochs=15 --batch_size=32 --learning_rate=3e-3 \
	    --seed=0 --deterministic --mixed_precision=float32 --verbose=2
	$(BIN)/leukemia-evaluate --model_dir=$(DEMO)/model --records_dir=$(DEMO)/records \
	    --tta=flips
	$(BIN)/leukemia-predict --model_dir=$(DEMO)/model --input=$(DEMO)/records \
	    --output=$(DEMO)/test_predictions.csv
	@echo "Report: $(DEMO)/model/eval/validation-flips/report.md (all evaluations: $(DEMO)/model/eval/index.md)"

# Lint first (seconds), then the suite in TEST_WORKERS pytest-xdist processes: one per
# core, at most 4, and at most one per 3 GB of available memory (a worker peaks at ~2.4
# GB; most of a test's time is single-threaded graph building, so one process would
# leave cores idle). `make test TEST_WORKERS=0` runs it in this process. Times:
# BUILD_NOTES.md.
TEST_WORKERS ?= $(shell n=$$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 1); \
    m=$$(awk '/^MemAvailable:/ {print int($$2 / 3000000)}' /proc/meminfo 2>/dev/null); \
    if [ -n "$$m" ] && [ "$$m" -lt "$$n" ]; then n=$$m; fi; \
    if [ "$$n" -gt 4 ]; then n=4; fi; if [ "$$n" -lt 1 ]; then n=1; fi; echo $$n)
test: $(STAMP)
	$(BIN)/python -m flake8 leukemia_tf tools tests
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist worksteal tests

bench: $(STAMP)
	$(BIN)/leukemia-bench all --json_out=bench_out/all.json

lint: $(STAMP)
	$(BIN)/python -m flake8 leukemia_tf tools tests

clean:
	rm -rf $(VENV) $(DEMO) bench_out build *.egg-info
