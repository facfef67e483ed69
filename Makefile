# The two commands an instructor needs:  make book  and  make test.
# Both set up .venv first (once; later runs reuse it until requirements.txt or pyproject.toml change).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The CPU build of torch: a plain `torch` requirement would pull a multi-GB CUDA build.
TORCH_SPEC ?= torch==2.13.0

.PHONY: help setup constraints book book-student pdf labs execute check-labs lint test test-fast browser sandbox clean nbgrader-env

help:
	@echo "make book      build the site into _build/html (sets up .venv first)"
	@echo "make book-student  the students' site, without solutions, into _build/student/html"
	@echo "make pdf       print the whole course to _build/pdf/course.pdf"
	@echo "make test      run the whole test suite: lint, labs up to date, unit tests, nbval, site"
	@echo "make labs      regenerate labs/ and the setup cells from solutions/ and _config.yml"
	@echo "make execute   re-execute book/ and solutions/ notebooks and store their outputs"

# constraints.txt pins the whole toolchain for Python 3.11, the CI interpreter (see the file).
PINNED = import sys; print("-c constraints.txt" if sys.version_info[:2] == (3, 11) else "")

$(STAMP): requirements.txt pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)" -r requirements.txt \
	  $$($(BIN)/python -c '$(PINNED)')
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

setup: $(STAMP)

# Re-resolve requirements.txt from PyPI in a scratch environment and pin the result.
constraints:
	rm -rf .venv-constraints && $(PYTHON) -m venv .venv-constraints
	.venv-constraints/bin/python -m pip install --quiet --upgrade pip
	.venv-constraints/bin/python -m pip install --quiet "$(TORCH_SPEC)" -r requirements.txt
	{ sed -n '/^#/p' constraints.txt; .venv-constraints/bin/python -m pip freeze --exclude-editable \
	  | grep -iv '^torch=='; } > constraints.txt.new && mv constraints.txt.new constraints.txt
	rm -rf .venv-constraints

# Headless Chromium for the site test, from Debian's packages (never a downloaded browser build).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the browser test"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium >/dev/null; }

# bubblewrap for the grader's sandbox, from Debian's packages (setpriv and prlimit come with util-linux).
sandbox:
	@command -v bwrap >/dev/null 2>&1 || { \
	  echo "installing Debian's bubblewrap for the grader's sandbox"; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq bubblewrap >/dev/null; }

# axe-core for the site test's accessibility check, from npm at the version package-lock.json pins.
AXE := node_modules/axe-core/axe.min.js
$(AXE): package.json package-lock.json
	@command -v npm >/dev/null 2>&1 || { echo "npm is missing: install Node.js and npm (Debian: apt-get install nodejs npm)"; exit 1; }
	npm ci --no-audit --no-fund --loglevel=error
	touch $(AXE)

# nbgrader for tests/test_nbgrader.py, in a venv of its own (its Jupyter server and notebook pins
# stay out of .venv); its notebooks run on .venv's Python through a kernelspec the test writes.
NBGRADER_VENV := .venv-nbgrader
NBGRADER_STAMP := $(NBGRADER_VENV)/.installed
$(NBGRADER_STAMP): requirements-nbgrader.txt
	test -x $(NBGRADER_VENV)/bin/python || $(PYTHON) -m venv $(NBGRADER_VENV)
	$(NBGRADER_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(NBGRADER_VENV)/bin/python -m pip install --quiet -r requirements-nbgrader.txt
	touch $(NBGRADER_STAMP)

nbgrader-env: $(NBGRADER_STAMP)

labs: $(STAMP)
	$(BIN)/python -m labcore.assign

execute: $(STAMP)
	$(BIN)/python -m labcore.assign --execute

check-labs: $(STAMP)
	$(BIN)/python -m labcore.assign --check

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

book: $(STAMP)
	rm -rf _build
	$(BIN)/jupyter-book build . -W --keep-going

# The students' site: labcore.release writes the student edition of HEAD (no solutions/, no
# instructor guide) into _build/student/source, and the site is built from it, as the public
# repository's `make book` builds it. Pass RELEASE_ARGS="--repository-url URL --tag TAG" for
# Colab links that open the public repository.
book-student: $(STAMP)
	rm -rf _build/student
	$(BIN)/python -m labcore.release _build/student/source $(RELEASE_ARGS)
	$(BIN)/jupyter-book build _build/student/source -W --keep-going
	mv _build/student/source/_build/html _build/student/html

# The whole course as one PDF, offline: the single-page build printed by headless Chromium.
pdf: $(STAMP) browser
	rm -rf _build/singlehtml
	$(BIN)/jupyter-book build . -W --keep-going --builder singlehtml
	$(BIN)/python -m labcore.book_pdf _build/singlehtml _build/pdf/course.pdf

# Unit tests only (fast): no notebooks, no site.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not browser" --ignore=tests/test_site.py -q

test: $(STAMP) $(NBGRADER_STAMP) browser sandbox $(AXE) lint check-labs book pdf
	$(BIN)/python -m pytest tests book solutions labs -n 2 --dist loadfile \
	  --nbval --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg -p no:cacheprovider

clean:
	rm -rf _build .pytest_cache
