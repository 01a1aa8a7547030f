VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
export MUJOCO_GL ?= egl

.PHONY: setup test test-fast demo bench bench-skills bench-gpu bench-rl checkpoints checkpoints-rl lint clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# CPU torch first where no GPU is present: an unpinned torch pulls multi-GB CUDA wheels.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[dev,warp,sweep]"  # warp: MuJoCo Warp backend; sweep: Ray Tune (so CI tests both)
	touch $@

setup: $(VENV)/.installed

test: setup
	$(VENV)/bin/pytest -q

test-fast: setup
	$(VENV)/bin/pytest -q -m "not slow"

# The whole pipeline at demo scale, from the default configs with smaller budgets (flags below):
# expert demonstrations (two collectors, one per core) -> closed-loop skill model -> its prior
# refit on the same demonstrations (configs/skills/prior_refit.yaml) -> RL (configs/rl/default.yaml)
# -> the best validation checkpoint and the prior on held-out seeds (DEMO_MODE skills; the
# expert's figures are its demonstrations') -> runs/<date>/report.md (metrics table,
# learning_curve.png, policy.mp4). 18-19 min on a 2-core CPU: RL 1.00 / prior 1.00 (mean
# skills); sampled, three earlier runs: RL 0.92 / 0.925 / 0.88, priors 0.845 / 0.905 / 0.915
# (200 held-out episodes; BENCHMARKS.md). The high level is what needs data and steps: 378-381
# noisy demonstrations, 80 skill epochs and the refit gave the priors above; 100
# demonstrations and one 80-epoch fit 0.35-0.60.
DEMO ?= runs/$(shell date +%Y-%m-%d)
# DEMO_EPISODES: per collector (2 collectors)
DEMO_EPISODES ?= 200
DEMO_SKILL_EPOCHS ?= 80
DEMO_REFIT_EPOCHS ?= 60
DEMO_ENV_STEPS ?= 20000
# The default's warmups (1000 transitions, then 2000 critic-only updates) end at 30k env steps,
# after the demo's budget: at the demo's scale the critics start at 5k env steps and selection
# by Q and policy updates at 10k, so the RL stage acts on the policy in its 20k steps.
DEMO_WARMUP ?= 500
DEMO_CRITIC_WARMUP ?= 500
DEMO_EVAL ?= 50
# How the demo's RL policy and its prior act in validation (best.ckpt) and on held-out seeds:
# mean skills (z = m tanh(mu_pi/c); the prior's z = mu_q_hat) were chosen on validation seeds,
# where the mean skill beat the sampled one for each of three demo RL policies (BENCHMARKS.md).
# DEMO_MODE=sampled gives the agent's training behaviour (samples, best of 4 by Q).
DEMO_MODE ?= mean
DEMO_COLLECT := $(VENV)/bin/pourlit collect -c configs/collect/pouring.yaml --episodes $(DEMO_EPISODES) \
	--num-envs 2 --action-noise 0.3 --out $(DEMO)/data --seed 0 --world-size 2
DEMO_EVAL_ARGS := --episodes $(DEMO_EVAL) --num-envs 2 -q
# The skill fits run alone: 2 torch threads (pourlit's default is 1, fastest beside other work).
DEMO_FIT := POURLIT_TORCH_THREADS=2 $(VENV)/bin/pourlit fit -c configs/skills/spirl_cl.yaml
# --run_dir DIR puts a whole run (logs, every checkpoint, the config copy) under DIR.
demo: setup
	$(DEMO_COLLECT) --rank 0 -q & pid=$$!; $(DEMO_COLLECT) --rank 1; s=$$?; wait $$pid && exit $$s
	$(DEMO_FIT) --data.init_args.data_dir $(DEMO)/data --trainer.max_epochs $(DEMO_SKILL_EPOCHS) \
		--run_dir $(DEMO)/skills
	$(DEMO_FIT) -c configs/skills/prior_refit.yaml \
		--model.init_args.init_ckpt $(DEMO)/skills/checkpoints/last.ckpt --data.init_args.data_dir $(DEMO)/data \
		--trainer.max_epochs $(DEMO_REFIT_EPOCHS) --run_dir $(DEMO)/refit
	$(VENV)/bin/pourlit fit -c configs/rl/default.yaml --model.init_args.skill_ckpt $(DEMO)/refit/checkpoints/last.ckpt \
		--model.init_args.max_env_steps $(DEMO_ENV_STEPS) --trainer.limit_train_batches 1000 \
		--model.init_args.warmup_transitions $(DEMO_WARMUP) --model.init_args.critic_warmup_updates $(DEMO_CRITIC_WARMUP) \
		--model.init_args.eval_episodes 20 --model.init_args.eval_mode $(DEMO_MODE) --run_dir $(DEMO)/rl
	$(VENV)/bin/pourlit evaluate --ckpt $(DEMO)/rl/checkpoints/best.ckpt $(DEMO_EVAL_ARGS) --mode $(DEMO_MODE) --video $(DEMO)/policy.mp4 \
		--json $(DEMO)/eval_rl.json & pid=$$!; \
	$(VENV)/bin/pourlit evaluate --ckpt $(DEMO)/refit/checkpoints/last.ckpt $(DEMO_EVAL_ARGS) --mode $(DEMO_MODE) --json $(DEMO)/eval_prior.json; \
	s=$$?; wait $$pid && exit $$s
	$(VENV)/bin/pourlit report --run $(DEMO)/rl --eval "RL (configs/rl/default.yaml, $(DEMO_MODE) skills)"=$(DEMO)/eval_rl.json \
		--eval "skill prior ($(DEMO_MODE) skills)"=$(DEMO)/eval_prior.json \
		--video $(DEMO)/policy.mp4 --collect-summary $(DEMO)/data/summary.json -o $(DEMO)/report.md

# BENCH_ARGS="--baseline main" also times main's env in the same process (before/after).
BENCH_ARGS ?=
bench: setup
	$(PY) benchmarks/bench_sim.py $(BENCH_ARGS)

# Skill training step vs the commit before the 2026-12-03 speed-up (SKILLS_BASELINE) at the
# issue's sizes (hidden 128), and Lightning fit vs a bare loop; more: BENCH_ARGS="--spirl-ref DIR".
SKILLS_BASELINE ?= 37361a0
bench-skills: setup
	$(PY) benchmarks/bench_skills.py --data-dir data/pouring --hidden 128 --baseline $(SKILLS_BASELINE) $(BENCH_ARGS)

# MuJoCo Warp env steps/s vs number of envs (1 ... 8192 on a GPU; a small sweep on CPU-only).
bench-gpu: setup
	$(PY) benchmarks/bench_gpu.py

# RL: training throughput, then the method comparison on Ray Tune (configs/sweeps/rl_methods.yaml:
# 6 methods x 3 seeds, 50k env steps; results in runs/sweeps/rl_methods; a killed sweep: --resume).
bench-rl: setup
	$(PY) benchmarks/bench_rl.py throughput
	$(VENV)/bin/pourlit sweep -c configs/sweeps/rl_methods.yaml

# Rebuild the shipped skill prior from scratch with the project's own commands (about an hour on
# 2 cores; scratch data in runs/ckpt-build): 200 expert episodes with action noise 0.3 -> closed-
# loop SPiRL skill model (encoder, decoder, prior); 1,000 more episodes (noise 0.3 and 0.05) ->
# the prior alone refit on all 1,177 kept (configs/skills/prior_refit.yaml). The high level is
# what needs the data (BENCHMARKS.md: prior rollouts 0.70 -> 0.97 on the validation seeds).
CKPT_BUILD := runs/ckpt-build
COLLECT := $(VENV)/bin/pourlit collect -c configs/collect/pouring.yaml --num-envs 2 -q
checkpoints: setup
	rm -rf $(CKPT_BUILD)
	$(COLLECT) --episodes 200 --action-noise 0.3 --seed 0 --out $(CKPT_BUILD)/data/noise0.3
	$(VENV)/bin/pourlit fit -c configs/skills/spirl_cl.yaml --data.init_args.data_dir $(CKPT_BUILD)/data/noise0.3 \
		--run_dir $(CKPT_BUILD)/skills
	$(COLLECT) --episodes 400 --action-noise 0.3 --seed 1 --out $(CKPT_BUILD)/data/noise0.3
	$(COLLECT) --episodes 600 --action-noise 0.05 --seed 0 --out $(CKPT_BUILD)/data/noise0.05
	$(VENV)/bin/pourlit fit -c configs/skills/spirl_cl.yaml -c configs/skills/prior_refit.yaml \
		--model.init_args.init_ckpt $(CKPT_BUILD)/skills/checkpoints/last.ckpt \
		--data.init_args.data_dir $(CKPT_BUILD)/data --run_dir $(CKPT_BUILD)/refit
	$(VENV)/bin/pourlit export $(CKPT_BUILD)/refit/checkpoints/last.ckpt checkpoints/skills/spirl_cl.ckpt
	$(VENV)/bin/pourlit evaluate --ckpt checkpoints/skills/spirl_cl.ckpt --episodes 100 --json checkpoints/skills/spirl_cl.eval.json

# Rebuild the shipped default policy from the shipped skill prior: configs/rl/default.yaml, seed
# CKPT_RL_SEED, CKPT_RL_STEPS env steps; the checkpoint with the best validation success (seeds
# 20000) is exported and evaluated on 100 held-out episodes (seeds 10000), sampled and mean skill.
CKPT_RL_STEPS ?= 200000
CKPT_RL_SEED ?= 0
checkpoints-rl: setup
	rm -rf $(CKPT_BUILD)/rl
	$(VENV)/bin/pourlit fit -c configs/rl/default.yaml --model.init_args.max_env_steps $(CKPT_RL_STEPS) \
		--model.init_args.seed $(CKPT_RL_SEED) --seed_everything $(CKPT_RL_SEED) --run_dir $(CKPT_BUILD)/rl
	$(VENV)/bin/pourlit export $(CKPT_BUILD)/rl/checkpoints/best.ckpt checkpoints/rl/default.ckpt
	$(VENV)/bin/pourlit evaluate --ckpt checkpoints/rl/default.ckpt --episodes 100 --json checkpoints/rl/default.eval.json

lint: setup
	$(VENV)/bin/ruff check pourlit tests benchmarks
	$(VENV)/bin/ruff format --check pourlit tests benchmarks
	$(VENV)/bin/lint-imports  # the architecture contract in pyproject.toml

clean:
	rm -rf $(VENV) runs .pytest_cache
