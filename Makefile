# Two entry points, each doing its own idempotent set-up:  make demo  |  make test
# Set-up: .venv with the pinned requirements (re-run only when requirements.txt/pyproject.toml change),
# then the embedded-data packages (Debian fonts + Fashion-MNIST, npm emoji sets).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
GRID ?= params/grids/mini.yaml
# run folders the sweep executes at once, each notebook kernel on cores / JOBS threads
JOBS ?= 2
# DEVICE=cuda: every run on the GPU, as the study <study>_cuda (outputs/mini_cuda); JOBS runs share one GPU
DEVICE ?=
ON_DEVICE := $(if $(DEVICE),--device $(DEVICE))

.PHONY: setup cpu-paths data test-tools demo study test test-fast lab strip clean-cache

# Every step must succeed: pipefail makes a failing pip fail the recipe even though its output is filtered
# (the filter drops one harmless pip notice and must not turn "no line left" into a failure).
.SHELLFLAGS := -o pipefail -ec
QUIET_PIP := { grep -v "is ignored: it is neither" || true; }

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "setup: installing pinned requirements into $(VENV) (first time ~3 min)"
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt 2>&1 | $(QUIET_PIP)
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e . 2>&1 | $(QUIET_PIP)
	@# from /, where the repo is not on sys.path: the kernels in notebooks/ import lib through the editable install
	cd / && $(abspath $(PY)) -c "import torch, torchvision, lib" && touch $(abspath $(STAMP))

setup: $(STAMP) cpu-paths data

# Every interpreter of the venv imports lib at start-up (a .pth file), which pins the CPU float paths before anything
# can load torch: a notebook whose first cell imports torch still computes on the pinned path (lib/__init__.py).
# lib loads the library built here, which puts MKL on the branch it takes on AMD CPUs, on every CPU (a C compiler:
# scripts/apt_require.sh installs gcc where there is none)
MKL_BRANCH := $(VENV)/lib/resend_mkl_zen_branch.so
cpu-paths: $(STAMP) $(MKL_BRANCH)
	@$(PY) -c "import pathlib, site; pathlib.Path(site.getsitepackages()[0], 'resend_cpu_paths.pth').write_text('import lib\\n')"

$(MKL_BRANCH): lib/csrc/mkl_zen_branch.c $(STAMP)
	@command -v cc >/dev/null || bash scripts/apt_require.sh compiler gcc
	cc -shared -fPIC -O2 -o $@ $<

data:
	@bash scripts/install_data.sh

# The preview: the 11 objectives on one source backbone x one run seed (params/grids/mini.yaml), the 4 glyph benchmarks.
demo: setup
	$(PY) -m lib.sweep $(GRID) --jobs $(JOBS) $(ON_DEVICE)

# The robust study: every configuration on 3 source backbones x 2 run seeds (params/grids/study.yaml)
study: setup
	$(PY) -m lib.sweep params/grids/study.yaml --jobs $(JOBS) $(ON_DEVICE)

# The test suite: unit tests, notebook tests (papermill, asserting recorded metrics) and nbval over the notebooks.
# the browser test's chromium + chromium-driver (apt, as root; otherwise one line says the command)
test-tools:
	@bash scripts/install_test_tools.sh

# nbval over the notebooks beside the tests on TEST_JOBS pytest-xdist workers, both cores busy (scripts/run_tests.sh)
TEST_JOBS ?= 2
test: setup test-tools
	TEST_JOBS=$(TEST_JOBS) PY=$(PY) bash scripts/run_tests.sh

test-fast: setup
	$(PY) -m pytest -q -m "not notebook" tests

lab: setup
	$(VENV)/bin/jupyter lab notebooks

strip:
	$(VENV)/bin/nbstripout notebooks/*.ipynb

clean-cache:
	rm -rf .cache
