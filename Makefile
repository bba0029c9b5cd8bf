# Two commands set everything up on a fresh machine:
#   make run    create .venv if missing, install, start the dashboard on 127.0.0.1:8501
#   make test   create .venv if missing, install runtime + dev tools, run the tests
PYTHON  ?= python3
VENV    ?= .venv
PORT    ?= 8501
ADDRESS ?= 127.0.0.1
PY      := $(VENV)/bin/python
export TF_CPP_MIN_LOG_LEVEL ?= 2

.PHONY: run test bench train-demos samples clean-venv

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.runtime: requirements.txt | $(PY)
	$(PY) -m pip install -q -r requirements.txt
	touch $@

$(VENV)/.dev: requirements-dev.txt $(VENV)/.runtime
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

run: $(VENV)/.runtime
	$(PY) -m streamlit run dashboard/app.py --server.address $(ADDRESS) --server.port $(PORT)

test: $(VENV)/.dev
	$(PY) -m pytest -q $(PYTEST_ARGS)

bench: $(VENV)/.runtime
	$(PY) -m camcore.bench

# Regenerates assets/models/*.keras and their cards (seeded; ~10 min on 2 cores).
train-demos: $(VENV)/.runtime
	$(PY) -m camcore.train_demo

# Regenerates assets/samples/ (deterministic).
samples: $(VENV)/.runtime
	$(PY) -m camcore.samples

clean-venv:
	rm -rf $(VENV)
