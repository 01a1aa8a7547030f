"""Can a critic pick better skills than the prior it rates? An offline probe of a skill checkpoint.

Three steps, each a subcommand (BENCHMARKS.md, thirteenth session, has the figures):

    python benchmarks/critic_probe.py collect --skill-ckpt S --episodes 500 --seed 30000 --out d0.pt
    python benchmarks/critic_probe.py fit --data d0.pt d1.pt --out critic.pt
    python benchmarks/critic_probe.py act --skill-ckpt S --critic critic.pt --mode best --k 8 \\
        --margin 0.1 --episodes 100 --seed 20000

``collect``: the prior acts with its mean skill z = mu_q(s), each decision replaced with
probability p by a sample z ~ q(.|s), so what follows a decision is nearly deterministic and an
episode's outcome rates the decisions in it with little noise from later ones.
``fit``: an ensemble of LayerNorm MLPs Q_j(s, z) regresses each decision's episode outcome.
``act``: the prior's mean skill, one prior sample, or the best by the critic of the mean and K
prior samples (the mean favoured by a margin), on seeded episodes.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
import torch.nn as nn

from pourlit.rl.acting import PriorPolicy
from pourlit.rl.policies import TwinCritic
from pourlit.sim.env import EnvConfig, PouringVecEnv
from pourlit.sim.episodes import run_episodes
from pourlit.skills.module import load_skill_prior


def perturbations_after(perturbed: np.ndarray) -> np.ndarray:
    """n_t = sum_{k > t} perturbed_k: how many perturbed decisions follow decision t."""
    return np.cumsum(perturbed[::-1])[::-1] - perturbed


def perturbed_mean_skills(q, p: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """z = mu_q(s), replaced w.p. ``p`` by z = mu_q(s) + sigma_q(s) eps, eps ~ N(0, I); and
    which were replaced."""
    pert = torch.rand(len(q.mu), generator=gen) < p
    sample = q.mu + q.sigma * torch.randn(q.mu.shape, generator=gen)
    return torch.where(pert[:, None], sample, q.mu), pert


def episode_rows(decisions: list[tuple], info: dict, i: int, episode: int) -> list[dict]:
    """One row per decision (s, z, perturbed) of env ``i``'s ended episode, with n_after and
    the episode's outcome y = poured - spilled (``info`` of its last step)."""
    after = perturbations_after(np.array([d[2] for d in decisions]))
    outcome = float(info["poured_fraction"][i] - info["spilled_fraction"][i])
    success = bool(info["success"][i])
    return [
        {"s": s, "z": z, "pert": pt, "n_after": int(n), "ep": episode}
        | {"success": success, "outcome": outcome}
        for (s, z, pt), n in zip(decisions, after, strict=True)
    ]


def collect(
    skill_ckpt: str, episodes: int, p: float, seed: int, out: str, num_envs: int = 2
) -> dict:
    """Roll out z_t = mu_q(s_t), or w.p. ``p`` z_t ~ q(.|s_t); save per decision (s, z,
    perturbed, n_after) and its episode's outcome (success, poured - spilled)."""
    skills = load_skill_prior(skill_ckpt)
    env = PouringVecEnv(EnvConfig.merged(skills.env_config, num_envs=num_envs))
    gen = torch.Generator().manual_seed(seed)
    clock = np.zeros(num_envs, dtype=np.int64)
    z = torch.zeros(num_envs, skills.latent_dim)
    open_eps: list[list[tuple]] = [[] for _ in range(num_envs)]
    rows: dict[str, list] = {
        k: [] for k in ("s", "z", "pert", "n_after", "success", "outcome", "ep")
    }
    obs, done = env.reset(seed=seed), 0
    with torch.no_grad():
        while done < episodes:
            new = np.flatnonzero(clock % skills.horizon == 0)
            if len(new):
                z[new], pert = perturbed_mean_skills(skills.prior_dist(obs[new]), p, gen)
                for j, i in enumerate(new):
                    open_eps[i].append((obs[i].clone(), z[i].clone(), bool(pert[j])))
            clock += 1
            obs, _, term, trunc, info = env.step(skills.decode(obs, z).clamp(-1.0, 1.0))
            for i in np.flatnonzero((term | trunc).numpy()):
                if done < episodes and open_eps[i]:
                    for row in episode_rows(open_eps[i], info, i, done):
                        for key, value in row.items():
                            rows[key].append(value)
                    done += 1
                    if done % 50 == 0:
                        print(f"collect: {done}/{episodes} episodes", flush=True)
                open_eps[i], clock[i] = [], 0
    data = {k: torch.stack(v) if k in ("s", "z") else torch.tensor(v) for k, v in rows.items()}
    torch.save(data, out)
    return {"decisions": len(rows["s"]), "episodes": episodes, "perturbed": int(data["pert"].sum())}


def make_critic(
    state_mean: torch.Tensor, state_std: torch.Tensor, latent_dim: int, members: int
) -> TwinCritic:
    """pourlit's RL critic as an ensemble: ``members`` MLPs (3 x 256, LayerNorm, ReLU)
    Q_j((s - mean) / std, a); the probe feeds it a = z / 2."""
    state_dim = len(state_mean)
    return TwinCritic(state_dim, latent_dim, 256, 3, (state_mean, state_std), members, True)


def member_nets(critic: TwinCritic) -> list[nn.Module]:
    """The ensemble's networks Q_1 ... Q_E."""
    return [getattr(critic, f"q{j}") for j in range(1, critic.n + 1)]


def critic_inputs(critic: TwinCritic, s: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """What every member reads: concat((s - mean) / std, z / 2)."""
    return torch.cat([(s - critic.state_mean) / critic.state_std, z / 2.0], -1)


def score(critic: TwinCritic, s: torch.Tensor, z: torch.Tensor, kappa: float) -> torch.Tensor:
    """mean_j Q_j(s, z / 2) - kappa std_j Q_j(s, z / 2), for states (..., d_s), skills (..., n_z)."""
    q = torch.stack(critic(s, z / 2.0))
    return q.mean(0) - kappa * q.std(0)


def load_critic(path: str) -> TwinCritic:
    """A critic saved by ``fit``."""
    saved = torch.load(path)
    n = saved["state_dim"]
    critic = make_critic(torch.zeros(n), torch.ones(n), saved["latent_dim"], saved["members"])
    critic.load_state_dict(saved["state_dict"])
    return critic.eval()


def load_collections(files: list[str]) -> tuple[dict[str, torch.Tensor], int]:
    """The decisions of ``collect`` files, one table, episode ids made unique; and the number
    of episodes."""
    parts, offset = [], 0
    for f in files:
        d = dict(torch.load(f))
        d["ep"] = d["ep"] + offset
        offset = int(d["ep"].max()) + 1
        parts.append(d)
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}, offset


def split_by_episode(ep: torch.Tensor, episodes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row indices of the training and held-out decisions: a random tenth of the episodes
    (at least one) held out whole."""
    held = torch.isin(ep, torch.randperm(episodes)[: max(1, episodes // 10)])
    return torch.nonzero(~held).squeeze(1), torch.nonzero(held).squeeze(1)


def train_members(
    critic: TwinCritic, x: torch.Tensor, y: torch.Tensor, w: torch.Tensor, rows, steps: int
) -> None:
    """Each member j minimises sum_i w_i (Q_j(x_i) - y_i)^2 / sum_i w_i on its own batches of
    512 of ``rows`` (AdamW 1e-3, weight decay 1e-4, cosine decay over ``steps``)."""
    opt = torch.optim.AdamW(critic.parameters(), lr=1e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for step in range(steps):
        loss = torch.zeros(())
        for m in member_nets(critic):
            i = rows[torch.randint(len(rows), (512,))]
            loss = loss + (w[i] * (m(x[i]).squeeze(-1) - y[i]) ** 2).sum() / w[i].sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 1000 == 0:
            print(
                f"fit: step {step}/{steps}, loss {loss.item() / critic.n:.4f}",
                flush=True,
            )


def fit(files: list[str], out: str, steps: int = 6000, members: int = 4, seed: int = 0) -> dict:
    """Each member regresses the outcome y on its own batches of 512, loss
    sum_i w_i (Q(s_i, z_i) - y_i)^2 / sum_i w_i with w_i = 1 / (1 + n_after_i) (AdamW 1e-3,
    cosine decay); 10 % of the episodes held out, reported as squared error and its variance."""
    if members < 2:
        raise ValueError(f"members must be >= 2 (the score uses their spread), got {members}")
    torch.manual_seed(seed)
    d, offset = load_collections(files)
    train, val = split_by_episode(d["ep"], offset)
    critic = make_critic(
        d["s"][train].mean(0), d["s"][train].std(0) + 1e-3, d["z"].shape[1], members
    )
    y, w = d["outcome"].float(), 1.0 / (1.0 + d["n_after"].float())
    train_members(critic, critic_inputs(critic, d["s"], d["z"]), y, w, train, steps)
    with torch.no_grad():
        q = torch.stack(critic(d["s"][val], d["z"][val] / 2.0))
        err = float(((q.mean(0) - y[val]) ** 2).mean())
    shapes = {"state_dim": d["s"].shape[1], "latent_dim": d["z"].shape[1], "members": members}
    torch.save({"state_dict": critic.state_dict(), **shapes}, out)
    return {
        "decisions": len(y),
        "episodes": offset,
        "held_out_mse": err,
        "held_out_var": float(y[val].var()),
    }


class CriticChoicePolicy(PriorPolicy):
    """Of the prior's mean skill mu_q(s) and K samples mu_q(s) + sigma_q(s) eps, the argmax of
    score(s, z) + margin [z = mu_q(s)]; the decoder and the clock are PriorPolicy's."""

    def __init__(
        self,
        skills,
        critic: TwinCritic,
        k: int,
        margin: float,
        kappa: float,
        seed: int,
        num_envs: int = 2,
    ) -> None:
        if k < 1:
            raise ValueError(f"best of the mean and k samples needs k >= 1, got k = {k}")
        super().__init__(skills, num_envs, seed)
        self.critic, self.k, self.margin, self.kappa = critic, k, margin, kappa
        self.not_mean = [0, 0]  # decisions that chose a sample, all decisions

    def choose(self, states: torch.Tensor) -> torch.Tensor:
        q = self.skills.prior_dist(states)
        eps = torch.randn((self.k,) + q.mu.shape, generator=self.gen)
        cands = torch.cat([q.mu[None], q.mu + q.sigma * eps])  # (1 + K, B, n_z)
        values = score(self.critic, states.expand(len(cands), -1, -1), cands, self.kappa)
        values[0] += self.margin
        best = values.argmax(0)
        self.not_mean[0] += int((best > 0).sum())
        self.not_mean[1] += len(best)
        return cands[best, torch.arange(len(best))]


def act(
    skill_ckpt: str,
    mode: str,
    critic: str | None,
    k: int,
    margin: float,
    kappa: float,
    episodes: int,
    seed: int,
    num_envs: int = 2,
) -> dict:
    """Success and liquid fractions of ``episodes`` seeded episodes: the prior's ``mean`` or
    ``sampled`` skills (pourlit's PriorPolicy, the episodes of ``pourlit evaluate``), or the
    ``best`` of the mean and ``k`` samples by the critic."""
    skills = load_skill_prior(skill_ckpt)
    if mode == "best":
        policy = CriticChoicePolicy(skills, load_critic(critic), k, margin, kappa, seed, num_envs)
    else:
        policy = PriorPolicy(skills, num_envs, seed, mode)
    env = PouringVecEnv(EnvConfig.merged(skills.env_config, num_envs=num_envs))
    result = run_episodes(env, policy, policy.begin, episodes, seed, None, True)
    result.update(mode=mode, k=k, margin=margin, kappa=kappa, seed=seed)
    if mode == "best":
        result["not_mean_fraction"] = policy.not_mean[0] / max(policy.not_mean[1], 1)
    return result


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("collect")
    c.add_argument("--skill-ckpt", required=True)
    c.add_argument("--episodes", type=int, default=500)
    c.add_argument("--perturb", type=float, default=0.15, help="probability of a prior sample")
    c.add_argument("--seed", type=int, default=30000, help="keep apart from 10000 and 20000")
    c.add_argument("--out", required=True)
    f = sub.add_parser("fit")
    f.add_argument("--data", nargs="+", required=True)
    f.add_argument("--out", required=True)
    f.add_argument("--steps", type=int, default=6000)
    f.add_argument("--members", type=int, default=4)
    f.add_argument("--seed", type=int, default=0, help="initialisation, batches, held-out episodes")
    a = sub.add_parser("act")
    a.add_argument("--skill-ckpt", required=True)
    a.add_argument("--mode", choices=("mean", "sampled", "best"), default="best")
    a.add_argument("--critic")
    a.add_argument("--k", type=int, default=8)
    a.add_argument("--margin", type=float, default=0.1)
    a.add_argument("--kappa", type=float, default=1.0)
    a.add_argument("--episodes", type=int, default=100)
    a.add_argument("--seed", type=int, default=20000, help="20000 validation, 10000 held out")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.cmd == "collect":
        out = collect(args.skill_ckpt, args.episodes, args.perturb, args.seed, args.out)
    elif args.cmd == "fit":
        torch.set_num_threads(2)
        out = fit(args.data, args.out, args.steps, args.members, args.seed)
    else:
        if args.mode == "best" and (not args.critic or args.k < 1):
            ap.error("act --mode best needs --critic and --k >= 1")
        out = act(
            args.skill_ckpt,
            args.mode,
            args.critic,
            args.k,
            args.margin,
            args.kappa,
            args.episodes,
            args.seed,
        )
    print(json.dumps(out))


if __name__ == "__main__":
    main()
