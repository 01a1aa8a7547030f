"""SPiRL's RL-stage math against hand computations (docs/algorithm.md, section 2)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from pourlit.rl.buffer import ReplayBuffer
from pourlit.rl.sac import (
    alpha_loss,
    critic_loss,
    critic_target,
    entropy_alpha_loss,
    policy_loss,
    polyak_update,
    prior_divergence,
    q_min,
    squashed_log_prob,
    squashed_sample,
)
from pourlit.rl.select import best_by_q, squashed_samples
from pourlit.rl.transitions import HL_KEYS, HLTransitionBuilder
from pourlit.skills.nets import DiagGaussian

LOG_2PI = math.log(2 * math.pi)


def gaussian(mu: list[float], sigma: list[float]) -> DiagGaussian:
    return DiagGaussian(torch.tensor(mu), torch.tensor(sigma).log())


# -- squashed Gaussian --------------------------------------------------------------------------


def test_squashed_log_prob_by_hand():
    dist = gaussian([0.0, 0.0], [1.0, 1.0])
    u = torch.zeros(2)
    # at u = 0: log N(0; 0, 1) = -0.5 log 2pi, and log(1 - tanh(0)^2) = 0
    assert squashed_log_prob(dist, u).item() == pytest.approx(2 * (-0.5 * LOG_2PI))
    assert squashed_log_prob(dist, u, 2.0).item() == pytest.approx(
        2 * (-0.5 * LOG_2PI - math.log(2))
    )
    dist = gaussian([1.0], [2.0])
    u = torch.tensor([0.5])
    log_n = -0.5 * ((0.5 - 1.0) / 2.0) ** 2 - math.log(2.0) - 0.5 * LOG_2PI
    expected = log_n - math.log(3.0) - math.log(1 - math.tanh(0.5) ** 2)
    assert squashed_log_prob(dist, u, 3.0).item() == pytest.approx(expected)


@pytest.mark.parametrize(("scale", "width"), [(1.0, 1.0), (2.0, 1.0), (2.0, 2.0), (3.0, 0.5)])
def test_squashed_log_prob_is_change_of_variables(scale, width):
    torch.manual_seed(0)
    mu, log_sigma = torch.randn(2, 4, dtype=torch.float64).unbind(0)
    dist = DiagGaussian(mu, log_sigma * 0.5)
    u = torch.randn(4, dtype=torch.float64) * 1.5
    jac = torch.autograd.functional.jacobian(lambda x: scale * torch.tanh(x / width), u)
    expected = dist.log_prob(u).sum() - torch.logdet(jac)
    got = squashed_log_prob(dist, u, scale, width).item()
    assert got == pytest.approx(expected.item(), abs=1e-9)
    if width != 1.0:
        return
    # and the textbook form with log(1 - tanh^2)
    textbook = (dist.log_prob(u) - math.log(scale) - torch.log(1 - torch.tanh(u) ** 2)).sum()
    assert squashed_log_prob(dist, u, scale).item() == pytest.approx(textbook.item(), abs=1e-9)


def test_squashed_log_prob_stays_finite_where_tanh_saturates():
    dist = gaussian([0.0], [1.0])
    u = torch.tensor([30.0])  # 1 - tanh(30)^2 == 0 in float32: the textbook form gives +inf
    lp = squashed_log_prob(dist, u)
    # log(1 - tanh^2 u) ~ log 4 - 2u for large u
    assert lp.item() == pytest.approx(-0.5 * 30.0**2 - 0.5 * LOG_2PI - (math.log(4) - 60.0))


def test_squashed_sample_shapes_range_and_gradient():
    torch.manual_seed(0)
    mu = torch.zeros(5, 3, requires_grad=True)
    dist = DiagGaussian(mu, torch.full((5, 3), 1.0))
    a, u, lp = squashed_sample(dist, 2.0)
    assert a.shape == u.shape == (5, 3) and lp.shape == (5,)
    assert torch.equal(a, 2.0 * torch.tanh(u))
    assert a.abs().max() < 2.0
    assert torch.allclose(lp, squashed_log_prob(dist, u, 2.0))
    a.sum().backward()  # reparameterised: the action depends on mu
    assert mu.grad is not None and mu.grad.abs().sum() > 0


def test_prior_matched_squash_keeps_small_skills():
    """z = m tanh(u / m) has slope 1 at 0: small u pass almost unchanged, where SPiRL's
    m tanh(u) doubles them (m = 2); both stay inside (-m, m)."""
    torch.manual_seed(0)
    dist = DiagGaussian(torch.zeros(1000, 3), torch.full((1000, 3), math.log(0.1)))
    a, u, _ = squashed_sample(dist, 2.0, 2.0)
    torch.testing.assert_close(a, u, atol=0.01, rtol=0)  # |u| <~ 0.4: u - 2 tanh(u/2) ~ u^3/12
    assert torch.equal(a, 2.0 * torch.tanh(u / 2.0))
    b, u2, _ = squashed_sample(dist, 2.0)
    torch.testing.assert_close(b, 2.0 * u2, atol=0.2, rtol=0.1)
    big = DiagGaussian(torch.zeros(1, 3), torch.zeros(1, 3))
    assert squashed_samples(big, 500, 2.0, torch.Generator().manual_seed(0), 2.0).abs().max() < 2


def test_squashed_samples_are_seeded_and_shaped():
    dist = DiagGaussian(torch.randn(4, 3), torch.zeros(4, 3))
    z1 = squashed_samples(dist, 5, 2.0, torch.Generator().manual_seed(1))
    z2 = squashed_samples(dist, 5, 2.0, torch.Generator().manual_seed(1))
    assert z1.shape == (5, 4, 3) and torch.equal(z1, z2)
    eps = torch.randn((5, 4, 3), generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(z1, 2.0 * torch.tanh(dist.mu + dist.sigma * eps))


class _LinearQ(nn.Module):
    """Q_1(s, z) = sum(z), Q_2(s, z) = sum(z) + s_0: a critic whose ranking is known."""

    def forward(self, s, z):
        return z.sum(-1), z.sum(-1) + s[:, 0]


def test_best_by_q_takes_the_pessimistic_argmax():
    s = torch.tensor([[0.0], [-5.0]])  # state 1: Q_2 is 5 below Q_1, so min = Q_2 there
    cands = torch.tensor(
        [
            [[1.0, 0.0], [0.0, 0.0]],
            [[0.5, 0.0], [2.0, 1.0]],
            [[0.0, 3.0], [1.0, -1.0]],
        ]
    )  # (K=3, B=2, n_z=2)
    z, q = best_by_q(_LinearQ(), s, cands)
    torch.testing.assert_close(z, torch.tensor([[0.0, 3.0], [2.0, 1.0]]))
    torch.testing.assert_close(q, torch.tensor([3.0, 3.0 - 5.0]))


def test_best_by_q_of_one_candidate_is_that_candidate():
    cands = torch.randn(1, 6, 4)
    z, _ = best_by_q(_LinearQ(), torch.randn(6, 2), cands)
    assert torch.equal(z, cands[0])


# -- prior divergence ---------------------------------------------------------------------------


def test_prior_divergence_analytic_by_hand():
    policy = gaussian([1.0, 0.0], [1.0, 2.0])
    prior = gaussian([0.0, 0.0], [1.0, 1.0])
    # dim 1: 0.5 (1 + 1^2 - 1) - 0 ; dim 2: 0.5 (2^2 + 0 - 1) - log 2
    expected = 0.5 * (1 + 1 - 1) + 0.5 * (4 + 0 - 1) - math.log(2)
    d = prior_divergence(DiagGaussian(policy.mu[None], policy.log_sigma[None]), prior)
    assert d.shape == (1,)
    assert d.item() == pytest.approx(expected)


def test_prior_divergence_monte_carlo_matches_analytic():
    torch.manual_seed(0)
    policy = DiagGaussian(torch.tensor([[0.5, -1.0, 0.0], [2.0, 0.0, 1.0]]), torch.zeros(2, 3))
    policy.log_sigma = torch.tensor([[0.0, -0.5, 0.3], [0.2, 0.0, -0.2]])
    prior = DiagGaussian(torch.tensor([[0.0, 0.0, 0.5], [1.0, 0.5, 0.0]]), torch.zeros(2, 3))
    analytic = prior_divergence(policy, prior)
    mc = prior_divergence(policy, prior, analytic=False, samples=20000)
    assert mc.shape == (2,)
    assert torch.allclose(mc, analytic, rtol=0.03)


def test_prior_divergence_monte_carlo_has_reparameterised_gradient():
    torch.manual_seed(0)
    mu = torch.tensor([[1.0, 0.0]], requires_grad=True)
    policy = DiagGaussian(mu, torch.zeros(1, 2))
    prior = DiagGaussian(torch.zeros(1, 2), torch.zeros(1, 2))
    prior_divergence(policy, prior, analytic=False, samples=4000).sum().backward()
    # dKL/dmu = (mu - mu_hat) / sigma_hat^2 = (1, 0)
    assert torch.allclose(mu.grad, torch.tensor([[1.0, 0.0]]), atol=0.1)


def test_prior_divergence_clamp():
    policy = DiagGaussian(torch.tensor([[100.0], [1.0]]), torch.zeros(2, 1))
    prior = DiagGaussian(torch.zeros(2, 1), torch.zeros(2, 1))
    # KL = 0.5 * mu^2 = 5000 -> 100 ; 0.5 * 1 untouched
    assert prior_divergence(policy, prior).tolist() == [100.0, 0.5]
    assert prior_divergence(policy, prior, clamp=0.25).tolist() == [0.25, 0.25]
    # a Monte Carlo estimate can be negative: it is clamped from below too
    policy = DiagGaussian(torch.zeros(256, 1), torch.zeros(256, 1))
    prior = DiagGaussian(torch.full((256, 1), 3.0), torch.zeros(256, 1))
    torch.manual_seed(0)
    raw = prior_divergence(policy, prior, analytic=False, samples=1, clamp=math.inf)
    torch.manual_seed(0)
    clamped = prior_divergence(policy, prior, analytic=False, samples=1, clamp=2.0)
    assert (raw < -2.0).any() and (raw > 2.0).any()
    assert torch.equal(clamped, raw.clamp(-2.0, 2.0))


# -- SAC losses ---------------------------------------------------------------------------------


def test_critic_target_by_hand():
    r = torch.tensor([1.0, 2.0])
    terminated = torch.tensor([False, True])
    q1, q2 = torch.tensor([10.0, 5.0]), torch.tensor([8.0, 7.0])
    d = torch.tensor([2.0, 3.0])
    y = critic_target(r, terminated, (q1, q2), d, alpha=0.5, gamma=0.9, reward_scale=2.0)
    assert y.tolist() == pytest.approx([1 * 2 + 0.9 * (8 - 0.5 * 2), 2 * 2])


def test_an_ensembles_minimum_is_over_every_critic():
    """With n critics, min_j runs over all n: the target, the policy loss and selection."""
    qs = (torch.tensor([10.0, 5.0]), torch.tensor([8.0, 7.0]), torch.tensor([9.0, 1.0]))
    assert q_min(qs).tolist() == [8.0, 1.0]
    y = critic_target(torch.zeros(2), torch.zeros(2), qs, torch.zeros(2), 1.0, gamma=1.0)
    assert y.tolist() == [8.0, 1.0]
    assert policy_loss(qs, torch.zeros(2), 1.0).item() == pytest.approx(-(8.0 + 1.0) / 2)


def test_critic_target_bootstraps_through_truncation_not_termination():
    # an HL transition cut by the time limit (truncated) vs. one cut by success/failure
    builder = HLTransitionBuilder(horizon=2)
    obs, z = torch.zeros(2, 1), torch.zeros(2, 1)
    out = builder.add_step(
        obs,
        z,
        decision=torch.tensor([True, True]),
        reward=torch.tensor([1.0, 1.0]),
        terminated=torch.tensor([False, True]),
        truncated=torch.tensor([True, False]),
        final_obs=obs,
    )
    assert out["truncated"].tolist() == [True, False]
    assert out["terminated"].tolist() == [False, True]
    nq = torch.tensor([4.0, 4.0])
    y = critic_target(out["reward"], out["terminated"], (nq, nq), torch.zeros(2), alpha=1.0)
    assert y.tolist() == pytest.approx([1 + 0.99 * 4, 1])
    # float 0/1 flags, as stored by the replay buffer, work the same
    y2 = critic_target(out["reward"], out["terminated"].float(), (nq, nq), torch.zeros(2), 1.0)
    assert torch.equal(y, y2)


def test_critic_target_treats_alpha_as_constant():
    log_alpha = torch.zeros((), requires_grad=True)
    q = torch.ones(2, requires_grad=True)
    y = critic_target(torch.ones(2), torch.zeros(2), (q, q), torch.ones(2), log_alpha.exp())
    y.sum().backward()
    assert log_alpha.grad is None


def test_critic_loss_by_hand_and_stops_target_gradient():
    q = torch.tensor([1.0, 2.0], requires_grad=True)
    y = torch.tensor([0.0, 4.0], requires_grad=True)
    loss = critic_loss(q, y)
    assert loss.item() == pytest.approx(0.5 * (1**2 + 2**2) / 2)
    loss.backward()
    assert y.grad is None
    assert q.grad.tolist() == pytest.approx([(1 - 0) / 2, (2 - 4) / 2])


def test_policy_loss_by_hand_and_alpha_gets_no_gradient():
    q1, q2 = torch.tensor([1.0, 4.0]), torch.tensor([2.0, 3.0])
    d = torch.tensor([1.0, 2.0], requires_grad=True)
    log_alpha = torch.tensor(math.log(0.5), requires_grad=True)
    loss = policy_loss((q1, q2), d, log_alpha.exp())
    assert loss.item() == pytest.approx(((-1 + 0.5 * 1) + (-3 + 0.5 * 2)) / 2)
    loss.backward()
    assert log_alpha.grad is None
    assert d.grad.tolist() == pytest.approx([0.5 / 2, 0.5 / 2])


def test_policy_loss_with_log_prob_is_plain_sacs():
    """Plain SAC passes log pi(a|s) as the regulariser: mean [alpha log pi - min Q]."""
    q1, q2 = torch.tensor([1.0, 4.0]), torch.tensor([2.0, 3.0])
    lp = torch.tensor([1.0, -1.0], requires_grad=True)
    log_alpha = torch.tensor(math.log(0.5), requires_grad=True)
    loss = policy_loss((q1, q2), lp, log_alpha.exp())
    assert loss.item() == pytest.approx(((0.5 * 1 - 1) + (0.5 * -1 - 3)) / 2)
    loss.backward()
    assert log_alpha.grad is None
    assert lp.grad.tolist() == pytest.approx([0.5 / 2, 0.5 / 2])


def _sgd_step(loss_fn) -> tuple[float, float]:
    """One SGD step on log_alpha (init log 2); returns (d loss / d log_alpha, new log_alpha)."""
    log_alpha = torch.tensor(math.log(2.0), requires_grad=True)
    opt = torch.optim.SGD([log_alpha], lr=0.1)
    opt.zero_grad()
    loss_fn(log_alpha).backward()
    grad = log_alpha.grad.item()
    opt.step()
    return grad, log_alpha.item()


def test_alpha_loss_by_hand():
    log_alpha = torch.tensor(math.log(2.0), requires_grad=True)
    d = torch.tensor([6.0, 8.0], requires_grad=True)
    loss = alpha_loss(log_alpha, d, target_divergence=5.0)
    assert loss.item() == pytest.approx(2 * ((5 - 6) + (5 - 8)) / 2)
    loss.backward()
    assert d.grad is None
    assert log_alpha.grad.item() == pytest.approx(2 * ((5 - 6) + (5 - 8)) / 2)  # d alpha = alpha


def test_alpha_loss_gradient_sign():
    # policy far from the prior (D > delta): minimising raises alpha
    grad, new = _sgd_step(lambda la: alpha_loss(la, torch.tensor([7.0, 9.0]), 5.0))
    assert grad < 0 and new > math.log(2.0)
    # policy close to the prior (D < delta): minimising lowers alpha
    grad, new = _sgd_step(lambda la: alpha_loss(la, torch.tensor([1.0, 2.0]), 5.0))
    assert grad > 0 and new < math.log(2.0)


def test_entropy_alpha_loss_by_hand_and_sign():
    log_alpha = torch.tensor(0.0, requires_grad=True)
    lp = torch.tensor([1.0, 2.0], requires_grad=True)
    loss = entropy_alpha_loss(log_alpha, lp, target_entropy=-1.0)
    assert loss.item() == pytest.approx(-1 * ((1 - 1) + (2 - 1)) / 2)
    loss.backward()
    assert lp.grad is None
    # entropy estimate -log pi = -3 below target -1: minimising raises alpha
    grad, new = _sgd_step(lambda la: entropy_alpha_loss(la, torch.tensor([3.0, 3.0]), -1.0))
    assert grad < 0 and new > math.log(2.0)
    # entropy estimate 2 above target -1: minimising lowers alpha
    grad, new = _sgd_step(lambda la: entropy_alpha_loss(la, torch.tensor([-2.0, -2.0]), -1.0))
    assert grad > 0 and new < math.log(2.0)


# -- Polyak -------------------------------------------------------------------------------------


def _net(fill: float) -> nn.Module:
    net = nn.Sequential(nn.Linear(2, 2), nn.BatchNorm1d(2))
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(fill)
        net[1].running_mean.fill_(fill)
        net[1].running_var.fill_(fill + 1)
        net[1].num_batches_tracked.fill_(int(fill))
    return net


@pytest.mark.parametrize(("tau", "expected"), [(1.0, 3.0), (0.0, 1.0), (0.5, (1.0 + 3.0) / 2)])
def test_polyak_update(tau, expected):
    target, source = _net(1.0), _net(3.0)
    polyak_update(target, source, tau)
    for p in target.parameters():
        assert torch.equal(p, torch.full_like(p, expected))
    # buffers are copied whatever tau is
    for bt, bs in zip(target.buffers(), source.buffers(), strict=True):
        assert torch.equal(bt, bs)
    assert not any(p.requires_grad is False for p in target.parameters())


def test_polyak_default_tau_and_bad_tau():
    target, source = _net(0.0), _net(1.0)
    polyak_update(target, source)
    assert target[0].weight[0, 0].item() == pytest.approx(5e-3)
    with pytest.raises(ValueError, match="tau"):
        polyak_update(target, source, 1.5)


# -- HL transitions -----------------------------------------------------------------------------

# Two envs, H = 3, nine env steps t = 0..8.
#   env 0: skills chosen at t = 0, 3 (clock); terminated at t = 4 (mid-skill);
#          new episode: chosen at t = 5, 8 (clock)
#   env 1: skill chosen at t = 0; truncated at t = 1 (mid-skill);
#          new episode: chosen at t = 2, 5, 8 (clock)
T, N, H = 9, 2, 3
DECIDE = {0: [0, 3, 5, 8], 1: [0, 2, 5, 8]}


def obs_at(t: int, i: int) -> list[float]:
    return [float(t), float(i)]


def final_at(t: int, i: int) -> list[float]:
    return [100.0 + t, float(i)]


def z_at(t: int, i: int) -> list[float]:
    return [0.5 + t, -float(i)]


def reward_at(t: int, i: int) -> float:
    return (t + 1) * (1.0 if i == 0 else 10.0)


def rollout() -> dict[str, torch.Tensor]:
    states = torch.tensor([[obs_at(t, i) for i in range(N)] for t in range(T + 1)])
    return {
        "states": states,
        "skills": torch.tensor([[z_at(t, i) for i in range(N)] for t in range(T)]),
        "decision": torch.tensor([[t in DECIDE[i] for i in range(N)] for t in range(T)]),
        "rewards": torch.tensor([[reward_at(t, i) for i in range(N)] for t in range(T)]),
        "terminated": torch.tensor([[(t, i) == (4, 0) for i in range(N)] for t in range(T)]),
        "truncated": torch.tensor([[(t, i) == (1, 1) for i in range(N)] for t in range(T)]),
        "final_obs": torch.tensor([[final_at(t, i) for i in range(N)] for t in range(T)]),
    }


# (s, z, R, s_next, terminated, truncated) in emission order
EXPECTED = [
    # t = 1, env 1 truncated after 2 steps of the skill chosen at t = 0
    (obs_at(0, 1), z_at(0, 1), 10.0 * (1 + 2), final_at(1, 1), False, True),
    # t = 3, env 0's first skill ran its 3 steps: ends at s_3
    (obs_at(0, 0), z_at(0, 0), 1.0 + 2 + 3, obs_at(3, 0), False, False),
    # t = 4, env 0 terminated after 2 steps of the skill chosen at t = 3
    (obs_at(3, 0), z_at(3, 0), 4.0 + 5, final_at(4, 0), True, False),
    # t = 5, env 1's skill chosen at t = 2 (its new episode's start) ran 3 steps
    (obs_at(2, 1), z_at(2, 1), 10.0 * (3 + 4 + 5), obs_at(5, 1), False, False),
    # t = 8, both envs' skills chosen at t = 5 ran 3 steps
    (obs_at(5, 0), z_at(5, 0), 6.0 + 7 + 8, obs_at(8, 0), False, False),
    (obs_at(5, 1), z_at(5, 1), 10.0 * (6 + 7 + 8), obs_at(8, 1), False, False),
]


def as_rows(tr: dict[str, torch.Tensor]) -> list[tuple]:
    return [
        (
            tr["obs"][k].tolist(),
            tr["z"][k].tolist(),
            tr["reward"][k].item(),
            tr["next_obs"][k].tolist(),
            bool(tr["terminated"][k]),
            bool(tr["truncated"][k]),
        )
        for k in range(len(tr["reward"]))
    ]


def feed(builder: HLTransitionBuilder, ro: dict[str, torch.Tensor], steps: range) -> dict:
    """``builder.add_step`` for each step of ``ro`` in ``steps``; the transitions, joined."""
    parts = [
        builder.add_step(
            ro["states"][t],
            ro["skills"][t],
            ro["decision"][t],
            ro["rewards"][t],
            ro["terminated"][t],
            ro["truncated"][t],
            ro["final_obs"][t],
        )
        for t in steps
    ]
    return {k: torch.cat([p[k] for p in parts]) for k in HL_KEYS}


def test_hl_transition_builder_exact():
    ro = rollout()
    builder = HLTransitionBuilder(horizon=H)
    rows = []
    for t in range(T):
        out = feed(builder, ro, range(t, t + 1))
        assert tuple(out) == HL_KEYS and out["terminated"].dtype == torch.bool
        rows += as_rows(out)
    assert rows == EXPECTED
    # the skills chosen at t = 8 have run 1 step: not emitted, kept for the next call
    out = builder.add_step(
        ro["states"][T],
        torch.zeros(N, 2),
        torch.tensor([False, False]),
        torch.tensor([1.0, 1.0]),
        torch.tensor([False, True]),
        torch.tensor([False, False]),
        torch.full((N, 2), -1.0),
    )
    assert as_rows(out) == [
        (obs_at(8, 1), z_at(8, 1), reward_at(8, 1) + 1.0, [-1.0, -1.0], True, False)
    ]


def test_hl_transition_observation_is_the_decision_state():
    """The reference stores s_{t+1} as the HL observation of every HL step but the first."""
    ro = rollout()
    tr = feed(HLTransitionBuilder(H), ro, range(T))
    # env 0's second skill was chosen at t = 3 in s_3, not in s_4
    second = [k for k in range(len(tr["reward"])) if tr["z"][k].tolist() == z_at(3, 0)]
    assert len(second) == 1
    assert tr["obs"][second[0]].tolist() == obs_at(3, 0) != obs_at(4, 0)
    # within an episode, each skill starts where the previous one ended
    first = [k for k in range(len(tr["reward"])) if tr["z"][k].tolist() == z_at(0, 0)][0]
    assert torch.equal(tr["next_obs"][first], tr["obs"][second[0]])


@pytest.mark.parametrize("cut", [1, 2, 4, 7])
def test_hl_transition_builder_state_dict_resumes_the_running_skills(cut: int):
    """What a resumed run does: a fresh builder loads the saved running skills and emits the
    same transitions as the builder that never stopped."""
    ro = rollout()
    first = HLTransitionBuilder(H)
    before = feed(first, ro, range(cut))
    resumed = HLTransitionBuilder(H)
    resumed.load_state_dict(first.state_dict())
    after = feed(resumed, ro, range(cut, T))
    assert as_rows(before) + as_rows(after) == EXPECTED
    assert as_rows(feed(first, ro, range(cut, T))) == as_rows(after)


def test_hl_transition_builder_empty_output_has_shapes():
    builder = HLTransitionBuilder(horizon=3)
    out = builder.add_step(
        torch.zeros(4, 5),
        torch.zeros(4, 2),
        torch.ones(4, dtype=torch.bool),
        torch.zeros(4),
        torch.zeros(4, dtype=torch.bool),
        torch.zeros(4, dtype=torch.bool),
        None,
    )
    assert out["obs"].shape == (0, 5) and out["z"].shape == (0, 2) and out["reward"].shape == (0,)


def test_hl_transition_builder_rejects_a_broken_skill_clock():
    def step(b, decision, terminated=(False, False), final_obs=None):
        return b.add_step(
            torch.zeros(2, 1),
            torch.zeros(2, 1),
            torch.tensor(decision),
            torch.zeros(2),
            torch.tensor(terminated),
            torch.zeros(2, dtype=torch.bool),
            final_obs,
        )

    with pytest.raises(ValueError, match=r"envs \[1\] have no running skill"):
        step(HLTransitionBuilder(2), [True, False])
    b = HLTransitionBuilder(2)
    step(b, [True, True])
    with pytest.raises(ValueError, match=r"envs \[0\] chose a new skill before"):
        step(b, [True, False])
    b = HLTransitionBuilder(2)
    step(b, [True, True])
    step(b, [False, False])
    with pytest.raises(ValueError, match=r"envs \[0, 1\] did not choose a new skill after 2"):
        step(b, [False, False])
    b = HLTransitionBuilder(2)
    with pytest.raises(ValueError, match=r"envs \[1\] ended but final_obs is None"):
        step(b, [True, True], terminated=(False, True))
    # after an episode end the env must choose at its next step
    b = HLTransitionBuilder(2)
    step(b, [True, True], terminated=(False, True), final_obs=torch.zeros(2, 1))
    with pytest.raises(ValueError, match=r"envs \[1\] have no running skill"):
        step(b, [False, False])


# -- replay buffer ------------------------------------------------------------------------------

SPECS = {"obs": (2,), "reward": ()}


def batch(values: list[float]) -> dict[str, torch.Tensor]:
    v = torch.tensor(values)
    return {"obs": torch.stack([v, -v], dim=1), "reward": v}


def test_replay_buffer_wraps_around():
    buf = ReplayBuffer(4, SPECS, "cpu")
    assert len(buf) == 0
    buf.add(batch([0, 1, 2]))
    assert len(buf) == 3 and buf.pos == 3
    buf.add(batch([3, 4]))  # 4 overwrites the oldest (0)
    assert len(buf) == 4 and buf.pos == 1
    assert buf.data["reward"].tolist() == [4, 1, 2, 3]
    assert buf.data["obs"][:, 1].tolist() == [-4, -1, -2, -3]
    buf.add(batch([5, 6, 7, 8, 9, 10]))  # larger than capacity: the last 4 survive
    assert len(buf) == 4 and buf.pos == (1 + 6) % 4
    assert sorted(buf.data["reward"].tolist()) == [7, 8, 9, 10]
    assert buf.data["reward"][buf.pos - 1].item() == 10  # the newest sits just before pos
    buf.add(batch([]))  # empty batches are fine
    assert len(buf) == 4


def test_replay_buffer_dtypes_and_casts():
    buf = ReplayBuffer(3, {"done": (), "step": ()}, dtypes={"step": torch.long})
    buf.add({"done": torch.tensor([True, False]), "step": torch.tensor([7, 8])})
    assert buf.data["done"].dtype == torch.float32 and buf.data["done"][:2].tolist() == [1, 0]
    assert buf.data["step"].dtype == torch.long
    with pytest.raises(ValueError, match="not in specs"):
        ReplayBuffer(3, {"done": ()}, dtypes={"dnoe": torch.bool})


def test_replay_buffer_sampling_is_uniform_over_filled_entries_and_seeded():
    buf = ReplayBuffer(10, SPECS)
    buf.add(batch([0, 1, 2, 3, 4, 5]))
    s = buf.sample(6000, torch.Generator().manual_seed(0))
    assert s["obs"].shape == (6000, 2) and s["reward"].shape == (6000,)
    assert torch.equal(s["obs"][:, 0], s["reward"])  # rows stay together
    counts = torch.bincount(s["reward"].long(), minlength=10)
    assert counts[6:].sum() == 0  # never the unfilled rows
    assert (counts[:6] - 1000).abs().max() < 150  # ~1000 each
    again = buf.sample(6000, torch.Generator().manual_seed(0))
    assert torch.equal(again["reward"], s["reward"])
    assert not torch.equal(
        buf.sample(6000, torch.Generator().manual_seed(1))["reward"], s["reward"]
    )


def test_replay_buffer_state_dict_round_trip_continues_identically():
    a = ReplayBuffer(5, SPECS)
    a.add(batch([0, 1, 2, 3]))
    a.add(batch([4, 5, 6]))  # wrapped: pos 2
    state = a.state_dict()
    b = ReplayBuffer(5, SPECS)
    b.add(batch([9]))  # whatever was there is replaced
    b.load_state_dict(state)
    assert (len(b), b.pos) == (len(a), a.pos) == (5, 2)
    for buf in (a, b):
        buf.add(batch([7, 8]))
    for k in SPECS:
        assert torch.equal(a.data[k], b.data[k])
    ga, gb = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    for _ in range(3):
        sa, sb = a.sample(8, ga), b.sample(8, gb)
        assert all(torch.equal(sa[k], sb[k]) for k in SPECS)
    # a partly filled buffer saves only its filled rows and resumes at the same place
    c = ReplayBuffer(5, SPECS)
    c.add(batch([1, 2]))
    state = c.state_dict()
    assert state["data"]["reward"].shape == (2,)
    d = ReplayBuffer(5, SPECS)
    d.add(batch([5, 5, 5, 5]))
    d.load_state_dict(state)
    assert (len(d), d.pos) == (2, 2) and d.data["reward"].tolist() == [1, 2, 0, 0, 0]
    with pytest.raises(ValueError, match="capacity 5"):
        ReplayBuffer(6, SPECS).load_state_dict(state)


def test_replay_buffer_errors_speak():
    buf = ReplayBuffer(4, SPECS)
    with pytest.raises(RuntimeError, match="empty"):
        buf.sample(2)
    with pytest.raises(ValueError, match=r"'obs' has shape \(3, 4\), expected \(B, 2\)"):
        buf.add({"obs": torch.zeros(3, 4), "reward": torch.zeros(3)})
    with pytest.raises(ValueError, match=r"'reward' has shape \(3, 1\), expected \(B,\)"):
        buf.add({"obs": torch.zeros(3, 2), "reward": torch.zeros(3, 1)})
    with pytest.raises(ValueError, match=r"missing \['reward'\], unexpected \['rew'\]"):
        buf.add({"obs": torch.zeros(3, 2), "rew": torch.zeros(3)})
    with pytest.raises(ValueError, match="different batch sizes"):
        buf.add({"obs": torch.zeros(3, 2), "reward": torch.zeros(2)})
    assert len(buf) == 0  # nothing was written


def test_replay_buffer_takes_hl_transitions():
    tr = feed(HLTransitionBuilder(H), rollout(), range(T))
    specs = {k: tuple(v.shape[1:]) for k, v in tr.items()}
    buf = ReplayBuffer(16, specs, dtypes={"terminated": torch.bool, "truncated": torch.bool})
    buf.add(tr)
    assert len(buf) == len(EXPECTED)
    assert buf.data["terminated"][: len(buf)].tolist() == [e[4] for e in EXPECTED]
