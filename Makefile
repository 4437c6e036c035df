# The course's commands. On a fresh machine two are enough:
#   make lab    set up .venv and open JupyterLab on notebooks/
#   make test   set up .venv and run every test, notebooks included (fast mode)
# Others: make setup | course | slides | site | chromium | lock | clean | help

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch is installed first, pinned: on this course's reference machines this is the CPU
# build. GPU users: make setup TORCH_INDEX=https://download.pytorch.org/whl/cu128
TORCH_VERSION ?= 2.13.0
TORCH_INDEX   ?=
KERNEL_NAME   ?= llm-course
LAB_PORT      ?= 8888
# Per-cell time limit when the tests execute notebooks (fast mode), seconds.
NB_CELL_TIMEOUT ?= 600
# Executed notebooks the site is built from (make course writes them here, in learner mode).
SITE_NOTEBOOKS ?= build/notebooks
# The browser Marp prints the PDF decks with: CHROME_PATH if set, else the first of these on PATH.
CHROME := $(or $(CHROME_PATH),$(shell command -v chromium chromium-browser google-chrome google-chrome-stable 2>/dev/null | head -n1))
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

STAMP := $(VENV)/.course-installed
# Idle OpenMP threads sleep instead of spinning (a shared 2-core CPU thrashes otherwise).
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: help setup lab serve test test-unit test-notebooks test-learner-short course slides site chromium lock clean

help: ## list the commands
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

setup: $(STAMP) ## create .venv with the pinned environment, course_utils and the Jupyter kernel

$(STAMP): pyproject.toml requirements-lock.txt
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' || { \
	  echo "The course needs Python 3.11 or newer; '$(PYTHON)' is $$($(PYTHON) --version 2>&1)."; \
	  echo "Install one (e.g. pyenv install 3.11) and run: make $(MAKECMDGOALS) PYTHON=python3.11"; exit 1; }
	@test -x $(BIN)/python || { echo "[setup] creating $(VENV)"; $(PYTHON) -m venv $(VENV); }
	@echo "[setup] installing torch $(TORCH_VERSION)$(if $(TORCH_INDEX), from $(TORCH_INDEX),)"
	$(BIN)/pip install --quiet $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX),) torch==$(TORCH_VERSION)
	@echo "[setup] installing the pinned course environment (requirements-lock.txt)"
	$(BIN)/pip install --quiet -r requirements-lock.txt
	$(BIN)/pip install --quiet --no-deps -e .
	$(BIN)/python -m ipykernel install --user --name $(KERNEL_NAME) --display-name "LLM course ($(VENV))" >/dev/null
	@echo "[setup] registered the Jupyter kernel '$(KERNEL_NAME)'"
	@$(BIN)/course env
	@touch $(STAMP)

lab: setup ## set up, then start JupyterLab on notebooks/ (prints the URL with its token)
	@echo "[lab] starting JupyterLab on notebooks/ - open the http://127.0.0.1:$(LAB_PORT)/lab?token=... URL printed below"
	$(BIN)/jupyter lab --notebook-dir=notebooks --no-browser --ip=127.0.0.1 --port=$(LAB_PORT) \
	  $(if $(filter 0,$(shell id -u)),--allow-root,) $(LAB_ARGS)

serve: setup ## set up, then serve the course's SFT model as an OpenAI-compatible chat service on http://127.0.0.1:8000/v1 (Ctrl-C stops it)
	$(BIN)/course serve

test: setup ## set up, then run the unit tests, every notebook in fast mode, and the short ones in learner mode
	$(MAKE) --no-print-directory test-unit
	$(MAKE) --no-print-directory test-notebooks
	$(MAKE) --no-print-directory test-learner-short

test-unit: ## unit tests of course_utils, data, CLI, notebook shape and slides
	COURSE_FAST=1 $(BIN)/pytest -q tests

# Notebooks run last-numbered first, in an empty artifact cache: each notebook then has to
# build whatever earlier stage it needs by itself, which proves it runs alone. Then `course prebuild`
# must find every artifact already cached (its plan is what the notebooks use), and the course site is
# built from the outputs nbval produced (tests/nbval_outputs.py keeps them) with every page checked.
test-notebooks: ## execute every notebook in fast mode with nbval, newest first, empty cache; then prebuild finds all cached, and the site builds from their outputs
	@cache=$$(mktemp -d -t course-cache-XXXX); trap 'rm -rf "$$cache"' EXIT; \
	COURSE_FAST=1 COURSE_CACHE=$$cache COURSE_NB_OUTPUTS=$$cache/executed $(BIN)/python -m pytest -q \
	  -p no:cacheprovider -p tests.nbval_outputs --nbval-lax --nbval-current-env \
	  --nbval-cell-timeout=$(NB_CELL_TIMEOUT) $$(ls -r notebooks/[0-9][0-9]_*.ipynb) && \
	COURSE_FAST=1 COURSE_CACHE=$$cache $(BIN)/course prebuild --expect-cached 2>/dev/null && \
	$(BIN)/course site --executed $$cache/executed --out $$cache/site

# Notebooks whose learner mode takes about two minutes or less run in learner mode too, in their own empty
# cache; their figures go to that cache, never over the committed results/.
test-learner-short: ## notebooks 00, 01 and 07 in learner mode, empty cache
	@cache=$$(mktemp -d -t course-cache-XXXX); trap 'rm -rf "$$cache"' EXIT; \
	COURSE_CACHE=$$cache COURSE_RESULTS=$$cache/results $(BIN)/course notebooks --out $$cache/build \
	  notebooks/00_llmops_overview.ipynb notebooks/01_tokenization.ipynb notebooks/07_data_preparation.ipynb

course: setup ## every notebook in learner mode (copies and a time/memory table in build/), then refresh the README's and decks' figures
	$(BIN)/course notebooks --out build
	$(BIN)/course results --update
	$(BIN)/course figures build/notebooks/[0-9][0-9]_*.ipynb --out slides/img

slides: ## redraw the decks' diagrams (slides/diagrams.py), then build the Marp decks to HTML and PDF in build/slides/ (needs Node.js, npm and Chromium)
	@if [ -x $(BIN)/python ]; then $(BIN)/python slides/diagrams.py; \
	else echo "[slides] no $(VENV) yet (make setup): keeping the committed diagrams in slides/img/"; fi
	@command -v npm >/dev/null || { echo "make slides needs Node.js and npm (https://nodejs.org)"; exit 1; }
	npm ci --no-audit --no-fund --loglevel=error
	node_modules/.bin/marp --html --input-dir slides --output build/slides
	@mkdir -p build/slides && cp -R slides/img build/slides/
	@echo "[slides] HTML decks in build/slides/ (with their pictures in build/slides/img/)"
	@test -n "$(CHROME)" || { echo "[slides] the PDF decks need Chromium or Chrome: make chromium (Debian/Ubuntu), or install one and set CHROME_PATH"; exit 1; }
	CHROME_PATH=$(CHROME) node_modules/.bin/marp --pdf --allow-local-files --input-dir slides --output build/slides
	@echo "[slides] PDF decks in build/slides/ (printed with $(CHROME))"

chromium: ## install the operating system's Chromium for the PDF decks if no Chromium or Chrome is found (apt-get: Debian/Ubuntu)
	@if [ -n "$(CHROME)" ]; then echo "[chromium] using $(CHROME)"; \
	elif command -v apt-get >/dev/null; then \
	  echo "[chromium] installing Debian's chromium with apt-get (about 110 MB)"; \
	  $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null \
	    || $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium-browser >/dev/null; \
	else echo "[chromium] no apt-get here: install Chromium or Chrome yourself (macOS: brew install --cask chromium) and set CHROME_PATH"; exit 1; fi

site: setup ## the course site in build/site/ (course map, every notebook with its outputs, decks, instructor pack, search) from make course's executed notebooks
	@if ls $(SITE_NOTEBOOKS)/[0-9][0-9]_*.ipynb >/dev/null 2>&1; then src=$(SITE_NOTEBOOKS); else \
	  echo "[site] no executed notebooks in $(SITE_NOTEBOOKS) (make course writes them, in learner mode): executing them in fast mode first (about 5-10 minutes)"; \
	  $(BIN)/course notebooks --fast --out build/site-nb || echo "[site] some notebooks failed in fast mode: their pages show the error"; \
	  src=build/site-nb/notebooks; fi; \
	$(BIN)/course site --executed $$src --out build/site

lock: setup ## regenerate requirements-lock.txt from the current .venv (after changing pins)
	@{ sed -n '1,3p' requirements-lock.txt; $(BIN)/pip freeze --exclude-editable | grep -v -E '^(torch|course.utils)=='; } > requirements-lock.txt.new
	mv requirements-lock.txt.new requirements-lock.txt

clean: ## remove built things (artifacts cache, build/, node_modules); keeps .venv
	rm -rf artifacts build node_modules
