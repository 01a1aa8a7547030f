"""SPiRL's skill-learning losses and networks against hand computations (docs/algorithm.md, section 1)."""

from __future__ import annotations

import math

import pytest
import torch

from pourlit.skills.losses import (
    kl_loss,
    prior_kl_loss,
    prior_nll_loss,
    reconstruction_loss,
    skill_prior_loss,
)
from pourlit.skills.module import SkillPriorModule
from pourlit.skills.nets import BlockMLP, DiagGaussian, SkillEncoder


def test_reconstruction_loss_is_masked_mean_of_half_squared_error():
    a = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0], [9.0, 9.0]]])
    r = torch.tensor([[[0.0, 2.0], [3.0, 2.0]], [[1.0, 1.0], [0.0, 0.0]]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])  # last step of episode 2 is padding
    # real steps: (1,0)->0.5*1, (2,2)->0.5*4 ; (1,1)->0.5*2 ; 3 steps x 2 dims
    expected = (0.5 * 1 + 0.5 * 4 + 0.5 * 2) / 6
    assert reconstruction_loss(a, r, mask).item() == pytest.approx(expected)


def test_kl_loss_is_mean_over_latents_and_batch():
    mu = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    log_sigma = torch.tensor([[0.0, math.log(2.0)], [0.0, 0.0]])
    q = DiagGaussian(mu, log_sigma)
    per_dim = [0.5 * 1.0, 0.5 * (4.0 - 1.0) - math.log(2.0), 0.0, 0.5 * 4.0]
    assert kl_loss(q).item() == pytest.approx(sum(per_dim) / 4)


def test_prior_nll_sums_latents_and_stops_gradient_to_z():
    z = torch.tensor([[0.5, -1.0]], requires_grad=True)
    mu = torch.tensor([[0.0, 0.0]], requires_grad=True)
    q_hat = DiagGaussian(mu, torch.tensor([[0.0, math.log(2.0)]]))
    nll = prior_nll_loss(q_hat, z)
    expected = (0.5 * 0.25 + 0.5 * math.log(2 * math.pi)) + (
        0.5 * 0.25 + math.log(2.0) + 0.5 * math.log(2 * math.pi)
    )
    assert nll.item() == pytest.approx(expected)
    nll.backward()
    assert z.grad is None and mu.grad is not None


def test_prior_kl_variant_detaches_posterior():
    q = DiagGaussian(torch.zeros(1, 3, requires_grad=True), torch.zeros(1, 3))
    q_hat = DiagGaussian(torch.ones(1, 3, requires_grad=True), torch.zeros(1, 3))
    loss = prior_kl_loss(q_hat, q)
    assert loss.item() == pytest.approx(3 * 0.5)  # KL(N(0,1)||N(1,1)) = 0.5 per dim, summed
    loss.backward()
    assert q.mu.grad is None and q_hat.mu.grad is not None


def test_total_is_rec_plus_beta_kl_plus_prior():
    torch.manual_seed(0)
    a, r = torch.randn(4, 3, 2), torch.randn(4, 3, 2)
    q = DiagGaussian(torch.randn(4, 5), torch.randn(4, 5) * 0.1)
    q_hat = DiagGaussian(torch.randn(4, 5), torch.zeros(4, 5))
    z = q.rsample()
    out = skill_prior_loss(a, r, torch.ones(4, 3), q, q_hat, z, beta=0.01)
    assert out["loss"].item() == pytest.approx(
        (out["rec"] + 0.01 * out["kl"] + out["prior"]).item()
    )


def test_gaussian_kl_matches_monte_carlo():
    torch.manual_seed(1)
    p = DiagGaussian(torch.tensor([0.3, -1.0]), torch.tensor([0.1, -0.5]))
    q = DiagGaussian(torch.tensor([0.0, 0.5]), torch.tensor([0.4, 0.2]))
    x = p.mu + p.sigma * torch.randn(200_000, 2)
    mc = (p.log_prob(x) - q.log_prob(x)).mean(0)
    assert torch.allclose(p.kl_to(q), mc, atol=0.02)


def test_log_sigma_is_clamped():
    g = DiagGaussian.from_params(torch.tensor([[0.0, 0.0, -50.0, 50.0]]))
    assert g.log_sigma.tolist() == [[-10.0, 2.0]]


def test_block_mlp_shape_and_batchnorm_only_in_hidden_blocks():
    net = BlockMLP(7, 4, hidden=16, blocks=3)
    kinds = [type(m).__name__ for m in net]
    assert kinds.count("BatchNorm1d") == 3
    assert kinds[0] == "Linear" and kinds[-1] == "Linear"
    assert kinds[1] == "LeakyReLU" and kinds[-2] == "LeakyReLU"
    assert net(torch.randn(5, 6, 7)).shape == (5, 6, 4)


def test_encoder_reads_last_real_step_and_forget_bias_is_one():
    torch.manual_seed(0)
    enc = SkillEncoder(state_dim=3, action_dim=2, n_z=4, hidden=8)
    assert torch.all(enc.cell.bias_ih[8:16] + enc.cell.bias_hh[8:16] == 1.0)
    a, s = torch.randn(1, 5, 2), torch.randn(1, 5, 3)
    full = enc(a, s, torch.tensor([[1.0, 1, 1, 0, 0]]))
    short = enc(a[:, :3], s[:, :3], torch.ones(1, 3))
    assert torch.allclose(full.mu, short.mu, atol=1e-6)  # padding after step 3 is ignored


def _encoder_step_by_step(enc, actions, states, mask):
    """The encoder's equations written out: embed, nn.LSTMCell once per step, head at the
    last real step (what SkillEncoder computed before it ran the window in one kernel)."""
    x = actions if states is None else torch.cat([actions, states], dim=-1)
    e = enc.embed(x)
    hx = cx = e.new_zeros(e.shape[0], enc.cell.hidden_size)
    outs = []
    for t in range(e.shape[1]):
        hx, cx = enc.cell(e[:, t], (hx, cx))
        outs.append(hx)
    last = (mask.sum(dim=1).long() - 1).clamp(min=0)
    return enc.head(torch.stack(outs, dim=1)[torch.arange(e.shape[0]), last])


@pytest.mark.parametrize("state_dim", [5, 0])
@pytest.mark.parametrize("train", [True, False])
def test_encoder_matches_lstm_cell_equations_and_gradients(state_dim, train):
    torch.manual_seed(0)
    enc = SkillEncoder(state_dim=state_dim, action_dim=3, n_z=4, hidden=16).train(train)
    a = torch.randn(9, 6, 3)
    s = torch.randn(9, 6, state_dim) if state_dim else None
    mask = torch.ones(9, 6)
    mask[2, 4:] = 0
    mask[5, 1:] = 0
    q = enc(a, s, mask)
    got = torch.cat([q.mu, q.log_sigma], dim=-1)
    grads = torch.autograd.grad(got.square().sum(), list(enc.parameters()))
    want = _encoder_step_by_step(enc, a, s, mask)
    want_grads = torch.autograd.grad(want.square().sum(), list(enc.parameters()))
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    for g, w in zip(grads, want_grads, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("variant", ["closed_loop", "open_loop"])
def test_module_forward_shapes_and_gradients(variant):
    torch.manual_seed(0)
    m = SkillPriorModule(
        state_dim=6, action_dim=3, horizon=4, latent_dim=5, hidden=16, variant=variant
    )
    batch = {
        "states": torch.randn(8, 5, 6),
        "actions": torch.randn(8, 4, 3),
        "pad_mask": torch.ones(8, 5),
    }
    out = m(batch)
    assert out["recon"].shape == (8, 4, 3)
    assert out["z"].shape == (8, 5) and out["q_hat"].mu.shape == (8, 5)
    losses, _ = m._losses(batch)
    losses["loss"].backward()
    # the prior loss reaches the prior only; the encoder gets rec + kl gradients
    assert all(p.grad is not None for p in m.prior.parameters())
    assert all(p.grad is not None for p in m.encoder.parameters())
    enc_state = m.encoder.embed.in_features
    assert enc_state == (3 + 6 if variant == "closed_loop" else 3)


def test_prior_loss_gives_no_gradient_to_encoder():
    torch.manual_seed(0)
    m = SkillPriorModule(state_dim=6, action_dim=3, horizon=4, latent_dim=5, hidden=16)
    batch = {
        "states": torch.randn(8, 5, 6),
        "actions": torch.randn(8, 4, 3),
        "pad_mask": torch.ones(8, 5),
    }
    out = m(batch)
    prior_nll_loss(out["q_hat"], out["z"]).backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in m.encoder.parameters())


def test_module_rejects_horizon_mismatch_and_bad_options():
    m = SkillPriorModule(state_dim=6, action_dim=3, horizon=4, latent_dim=5, hidden=16)
    batch = {
        "states": torch.randn(2, 4, 6),
        "actions": torch.randn(2, 3, 3),
        "pad_mask": torch.ones(2, 4),
    }
    with pytest.raises(ValueError, match="horizon"):
        m(batch)
    with pytest.raises(ValueError, match="variant"):
        SkillPriorModule(state_dim=6, action_dim=3, variant="loopy")
    with pytest.raises(ValueError, match="prior_loss"):
        SkillPriorModule(state_dim=6, action_dim=3, prior_loss="mse")
