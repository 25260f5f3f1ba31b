# Two entry points: `make demo` (the main job) and `make test`. Both build .venv themselves.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
# CPU build by default; CUDA users: make TORCH_SPEC="torch==2.x.y" ...
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed
# lmms-eval without its requirements (they would replace the CPU torch and add a torchvision that
# cannot load beside it); the [lmms] extra holds what it needs to run our plugin and tasks
LMMS_EVAL_SPEC ?= lmms-eval==0.7.3

.PHONY: demo demo-video demo-curves test install lmms clean

install: $(STAMP)

# the lmms-eval plugin and the toy tasks (make install already does this)
lmms: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[dev,lmms]"
	$(BIN)/python -m pip install -q --no-deps "$(LMMS_EVAL_SPEC)"
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/voco demo --preset demo --out runs/demo

# the video demo continues from the image demo's models in runs/demo (running it first if needed)
demo-video: $(STAMP)
	$(BIN)/voco demo --video --preset demo --out runs/demo

# learning curves of the base, upper bound and VoCo K=1 (runs/demo/curves), for tuning the toy world
demo-curves: $(STAMP)
	$(BIN)/voco demo --curves --preset demo --out runs/demo

clean:
	rm -rf $(VENV) runs
