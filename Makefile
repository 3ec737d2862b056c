# Two entry points: `make demo` (the main job) and `make test` (the suite).
# Both create .venv on first use and install the package with its pinned dependencies.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test test-slow bench install clean browser

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# Headless Chromium for the `alan pick` browser test (Debian packages; needs root). Without it
# that test is skipped with its reason.
browser:
	command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; }

demo: $(STAMP)
	$(BIN)/alan demo $(ARGS)

test: $(STAMP)
	OMP_NUM_THREADS=2 $(BIN)/python -m pytest $(ARGS)

test-slow: $(STAMP)
	$(BIN)/python -m pytest -m slow $(ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "no test is marked slow today"; else exit $$rc; fi

bench: $(STAMP)
	for f in bench/bench_*.py; do $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
