# The two commands a newcomer needs: `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test lint format bench reproduce reproduce-ism reproduce-bsm default-model install-default-model clean

$(STAMP): pyproject.toml setup.py
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q -e '.[ml,serve,dev]'
	touch $(STAMP)

install: $(STAMP)

# Builds the native block recorder again if its source changed since the install.
src/runtrace/trace/emulate/_blockrec.built: src/runtrace/trace/emulate/_blockrec.c $(STAMP)
	$(PY) setup.py -q build_ext --inplace
	touch $@

demo: install src/runtrace/trace/emulate/_blockrec.built
	$(VENV)/bin/runtrace demo

test: install src/runtrace/trace/emulate/_blockrec.built
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks
	$(VENV)/bin/lint-imports
	$(PY) -m pytest -q

format: install
	$(VENV)/bin/ruff format src tests benchmarks
	$(VENV)/bin/ruff check --fix src tests benchmarks

bench: install src/runtrace/trace/emulate/_blockrec.built
	$(PY) -m benchmarks.run

# The whole study: corpus -> traces -> datasets -> evaluation -> default model. Every step resumes: corpus
# and traces from their caches, datasets when their traces and settings are unchanged, evaluations (about
# 70 min on 2 cores) from the folds saved under reports/reproduce-*/checkpoints. After changing the code,
# FRESH=1 builds the datasets and runs the evaluations again from the start (also needed once when
# reports/reproduce-* hold reports written before fold checkpoints existed).
# CORPUS_LIMIT=N traces only N corpus samples (classes alternating) for a quicker, smaller run.
CORPUS_LIMIT ?= 0
FRESH ?=
# Seconds of emulation per corpus sample. Below the tracer's 60 s default so the ~2,200 benign DLLs fit
# in about an hour on 2 cores: Speakeasy runs every export of a DLL, and Wine's DLLs with hundreds of
# exports make tens of thousands of API calls (about 1 ms each), so a few percent of them would each take
# the whole minute.
TRACE_TIMEOUT ?= 15
# Traces shorter than this are left out of the datasets, so trace length cannot stand in for the label.
MIN_INSTRUCTIONS ?= 1000
# The datasets the models train on draw benign files matching the malware's arch, kind, toolchain, linker
# era and size (`dataset build --match`); MATCH= trains on every labelled trace instead.
MATCH ?= --match
WORK ?= work
# The default model's kind (an n-gram kind of `runtrace train --kind`), version string, and the
# false-positive rate its scan threshold keeps on the out-of-fold scores of its own recipe by family and
# by origin (files of malware families and of benign origins the model never saw, as a user's files are).
DEFAULT_KIND ?= ngram-lgbm-monotone
MODEL_VERSION ?= $(shell date +%Y.%m)-$(DEFAULT_KIND)-reproduce
SCAN_TARGET_FPR ?= 0.01
CORPUS ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/runtrace/corpus
reproduce: install src/runtrace/trace/emulate/_blockrec.built
	$(VENV)/bin/runtrace corpus build --corpus-dir $(CORPUS)
	$(VENV)/bin/runtrace corpus trace --corpus-dir $(CORPUS) --limit $(CORPUS_LIMIT) --timeout $(TRACE_TIMEOUT)
	$(VENV)/bin/runtrace corpus index --corpus-dir $(CORPUS) -o $(WORK)/models/default/similar --measure
	$(MAKE) -j2 reproduce-ism reproduce-bsm
	$(VENV)/bin/runtrace corpus audit --corpus-dir $(CORPUS) --dataset $(WORK)/datasets/bsm --extended \
		--figures docs/figures/corpus --write-doc docs/corpus.md
	$(VENV)/bin/runtrace corpus lineage --corpus-dir $(CORPUS) --write-doc docs/corpus.md
	$(VENV)/bin/runtrace results reports/reproduce-ism reports/reproduce-bsm \
		--notes docs/results-notes.md -o docs/results.md
	$(MAKE) default-model

# The default model: DEFAULT_KIND trained on every traced file of a match stratum that holds both classes,
# weighted so both classes weigh the same in each (matching by weighting, `train --weigh-strata`), and
# calibrated on the out-of-fold scores of that same recipe (scripts/training_data_arms.py, arm
# `weighted`, tested on the matched files) to keep SCAN_TARGET_FPR by family and by origin.
default-model: install
	$(VENV)/bin/runtrace dataset build -r bsm -m $(CORPUS)/manifest.parquet -o $(WORK)/datasets/bsm-all \
		--min-instructions $(MIN_INSTRUCTIONS) --jobs 1 $(if $(FRESH),--overwrite)
	for p in by-family by-origin; do \
		$(PY) scripts/training_data_arms.py $(WORK)/datasets/bsm-all $(WORK)/datasets/bsm $(CORPUS)/manifest.parquet \
			--protocol $$p --kind $(DEFAULT_KIND) --arms weighted -o reports/default-calibration/$$p.json \
			--predictions reports/default-calibration || exit 1; \
	done
	$(VENV)/bin/runtrace train -r bsm --kind $(DEFAULT_KIND) --dataset $(WORK)/datasets/bsm-all \
		--weigh-strata $(CORPUS)/manifest.parquet -o $(WORK)/models/default --threads 1 --no-progress
	$(VENV)/bin/runtrace calibrate $(WORK)/models/default --report reports/default-calibration/weighted \
		--representation bsm --protocol by-family --also-protocol by-origin --target-fpr $(SCAN_TARGET_FPR) \
		--dataset $(WORK)/datasets/bsm-all --version $(MODEL_VERSION)
	@echo "default model candidate: $(WORK)/models/default (make install-default-model ships it)"

# One representation's dataset and evaluation (every protocol, the LSTM and the baselines). reproduce
# runs ISM and BSM side by side, one core each: on 2 cores that is faster than one process with 2 threads.
reproduce-ism reproduce-bsm: reproduce-%:
	$(VENV)/bin/runtrace dataset build -r $* -m $(CORPUS)/manifest.parquet -o $(WORK)/datasets/$* \
		--min-instructions $(MIN_INSTRUCTIONS) $(MATCH) $(if $(FRESH),--overwrite)
	$(VENV)/bin/runtrace evaluate --dataset $(WORK)/datasets/$* --representation $* --protocol all \
		--models lstm,ngram-lr,ngram-lgbm,metadata,neighbours --manifest $(CORPUS)/manifest.parquet --threads 1 \
		--no-progress -o reports/reproduce-$* $(if $(FRESH),--overwrite)

# Ships the model `make reproduce` trained as the scanner's default: the files its kind needs (a sequence
# model's or an n-gram model's, with the ONNX graphs `runtrace train` exported), its calibration and the
# similarity index of the traced corpus (then update docs/model-card.md and the index's PROVENANCE.md).
install-default-model:
	test -f $(WORK)/models/default/calibration.json
	$(PY) scripts/install_model.py $(WORK)/models/default src/runtrace/data/models/default

clean:
	rm -rf build src/*.egg-info src/runtrace/trace/emulate/*.so src/runtrace/trace/emulate/_blockrec.built .pytest_cache
