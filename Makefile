# sagan_edu: `make lab` opens the course, `make test` runs every test.
# Both create .venv and install into it when it is missing or older than the files that define it.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
CHROMIUM := /usr/bin/chromium

.PHONY: lab test demo pretrained notebooks exercises lint venv chromium clean

# Opens the first notebook with the whole repository in the file browser (notebooks/, exercises/,
# solutions/). Jupyter refuses to run as root without --allow-root (containers, some VMs).
lab: $(STAMP)
	$(VENV)/bin/jupyter lab --ServerApp.root_dir=$(CURDIR) \
	  --LabApp.default_url=/lab/tree/notebooks/00_start_here.ipynb \
	  $(if $(filter 0,$(shell id -u)),--allow-root)

test: $(STAMP) chromium
	$(PY) -m ruff check .
	$(PY) -m pytest

# A short SAGAN training on the embedded MNIST digits (GPU if there is one): samples, attention
# maps, loss and γ curves land in runs/demo/. 1,500 steps at 0.5-1.0 s each on one CPU thread.
demo: $(STAMP)
	$(VENV)/bin/sagan-edu train --dataset mnist5k --steps 1500 --log-every 100 --out runs/demo --overwrite

# Rebuild the shipped weights: the metrics' MNIST feature network, then the four GANs of
# sagan_edu.pretrained.RECIPES (MNIST and twin-shapes, with and without attention), exported in
# float16; then their checksums (a test compares them). One set alone:
# `.venv/bin/python tools/make_pretrained.py twin-shapes-sagan32`. About an hour on 2 CPU cores.
pretrained: $(STAMP)
	$(VENV)/bin/sagan-edu train-classifier --out sagan_edu/weights/mnist5k-classifier.safetensors --overwrite
	$(PY) tools/make_pretrained.py --all

# Rewrite every notebook's Colab badge and setup cell from pyproject.toml's repository URL.
notebooks: $(STAMP)
	$(PY) tools/sync_notebooks.py

# Regenerate exercises/ from solutions/: every answer between nbgrader's BEGIN/END SOLUTION markers
# becomes a stub that raises NotImplementedError with a hint. First it writes nbgrader's cell
# metadata into solutions/ (tools/nbgrader_metadata.py). The tests fail if either is stale.
exercises: $(STAMP)
	$(PY) tools/make_exercises.py

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check sagan_edu tests benchmarks

venv: $(STAMP)

# The stamp is rewritten after a successful install, so a change to pyproject.toml or
# constraints.txt (or a half-finished install) triggers a fresh one.
$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --constraint constraints.txt --editable '.[dev]'
	touch $(STAMP)

# The browser test drives Debian's Chromium; Playwright's own browser download cannot work offline.
chromium:
	@test -x $(CHROMIUM) || { \
	  echo "Installing Debian's chromium for the browser test (needs root and apt)"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; }

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
