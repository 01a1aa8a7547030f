VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
export MUJOCO_GL ?= egl

.PHONY: setup test test-fast demo bench bench-skills checkpoints lint clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# CPU torch first where no GPU is present: an unpinned torch pulls multi-GB CUDA wheels.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

test: setup
	$(VENV)/bin/pytest -q

test-fast: setup
	$(VENV)/bin/pytest -q -m "not slow"

demo: setup
	$(VENV)/bin/pourlit collect -c configs/collect/pouring.yaml --episodes 20 --num-envs 2 --out runs/demo/data --seed 0
	$(VENV)/bin/pourlit inspect runs/demo/data
	$(VENV)/bin/pourlit render runs/demo/data/rollout_00000.h5 -o runs/demo/episode0.mp4
	$(VENV)/bin/pourlit evaluate --ckpt checkpoints/skills/spirl_cl.ckpt --episodes 10 --video runs/demo/skill_prior.mp4 --json runs/demo/skill_prior.json

bench: setup
	$(PY) benchmarks/bench_sim.py

bench-skills: setup
	$(PY) benchmarks/bench_skills.py --data-dir data/pouring

# Rebuild the shipped default checkpoints from scratch with the project's own commands
# (200 expert episodes -> closed-loop SPiRL skill prior). Scratch data lives in runs/ckpt-build.
CKPT_BUILD := runs/ckpt-build
CKPT_CALLBACKS := [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint", "init_args": {"dirpath": "$(CKPT_BUILD)/skills/checkpoints", "save_top_k": 1, "save_last": true}}]
checkpoints: setup
	rm -rf $(CKPT_BUILD)
	$(VENV)/bin/pourlit collect -c configs/collect/pouring.yaml --episodes 200 --num-envs 2 --out $(CKPT_BUILD)/data --seed 0
	$(VENV)/bin/pourlit fit -c configs/skills/spirl_cl.yaml --data.init_args.data_dir $(CKPT_BUILD)/data \
		--trainer.default_root_dir $(CKPT_BUILD)/skills --trainer.logger.init_args.save_dir $(CKPT_BUILD)/skills \
		--trainer.callbacks '$(CKPT_CALLBACKS)'
	$(PY) -c "from pourlit.skills.module import export_checkpoint as e; e('$(CKPT_BUILD)/skills/checkpoints/last.ckpt', 'checkpoints/skills/spirl_cl.ckpt')"
	$(VENV)/bin/pourlit evaluate --ckpt checkpoints/skills/spirl_cl.ckpt --episodes 50 --json checkpoints/skills/spirl_cl.eval.json

lint: setup
	$(VENV)/bin/ruff check pourlit tests benchmarks
	$(VENV)/bin/ruff format --check pourlit tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache
