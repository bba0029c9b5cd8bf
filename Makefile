# Two commands set everything up on a fresh machine:
#   make run    create .venv if missing, install, start the dashboard on 127.0.0.1:8501
#   make test   create .venv if missing, install runtime + dev tools, lint (ruff), type-check
#               camcore (mypy), run the tests (the docstring examples too: tests/test_doctests.py)
# Both install the project itself editable (pip install -e .), so `camcore` and `dashboard`
# import from this checkout and the `cam-studio` command exists in .venv/bin.
PYTHON  ?= python3
VENV    ?= .venv
PORT    ?= 8501
ADDRESS ?= 127.0.0.1
PY      := $(VENV)/bin/python
# pytest-xdist workers for `make test` (0: one process); see tests/conftest.py for the grouping.
TEST_WORKERS ?= 2
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: run test bench bench-dashboard train-demos generalization samples clean-venv

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.runtime: requirements.txt | $(PY)
	$(PY) -m pip install -q -r requirements.txt
	touch $@

$(VENV)/.dev: requirements-dev.txt $(VENV)/.runtime
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

# The project itself, editable; --no-deps: the pinned requirements are installed above.
$(VENV)/.project: pyproject.toml setup.py $(VENV)/.runtime
	$(PY) -m pip install -q -e . --no-deps
	touch $@

run: $(VENV)/.project
	$(VENV)/bin/cam-studio run --server.address $(ADDRESS) --server.port $(PORT)

# ruff and mypy first: they take seconds and fail fast, before the minutes of pytest.
test: $(VENV)/.dev $(VENV)/.project
	$(PY) -m ruff check .
	$(PY) -m mypy camcore
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

bench: $(VENV)/.project
	$(PY) -m camcore.bench

# The dashboard in headless Chromium (needs the dev tools and /usr/bin/chromium).
bench-dashboard: $(VENV)/.dev $(VENV)/.project
	$(PY) -m scripts.bench_dashboard

# Regenerates assets/models/*.keras and their cards (seeded, reproducible; 31 min 51 s end to
# end on an otherwise idle 2-core machine: images 1.5, vgg_defect 20, resnet_defect 10; README
# "Demo models"). `--pool-cache FILE` reuses the generated images on a rerun.
train-demos: $(VENV)/.project
	$(PY) scripts/train_demos.py

# Fresh-seed, leave-one-texture-family-out and localization figures into the cards (about 2 h
# on a shared 2-core machine; journaled, resumes).
generalization: $(VENV)/.project
	$(PY) scripts/generalization.py

# Regenerates assets/samples/ (deterministic).
samples: $(VENV)/.project
	$(PY) -m camcore.samples --out assets/samples

clean-venv:
	rm -rf $(VENV)
