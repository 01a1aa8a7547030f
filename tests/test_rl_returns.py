"""Monte Carlo returns for the critic (pourlit.rl.returns) and the options that use them."""

from __future__ import annotations

import math

import pytest
import torch

from pourlit.rl.buffer import ReplayBuffer
from pourlit.rl.policies import TwinCritic
from pourlit.rl.returns import MC_KEY, EpisodeReturns, discounted_returns, mc_critic_target


def test_discounted_returns_follow_the_recursion() -> None:
    r = torch.tensor([1.0, 0.0, -2.0, 0.5])
    g = discounted_returns(r, 0.9)
    want = [1.0 + 0.9 * 0.0 + 0.81 * -2.0 + 0.729 * 0.5, 0.9 * -2.0 + 0.81 * 0.5, -2.0 + 0.45, 0.5]
    torch.testing.assert_close(g, torch.tensor(want))
    assert discounted_returns(torch.zeros(0), 0.9).shape == (0,)


def test_mc_critic_target_modes() -> None:
    y = torch.tensor([1.0, 2.0, 3.0])
    g = torch.tensor([5.0, math.nan, 0.5])
    torch.testing.assert_close(mc_critic_target(y, g, "td"), y)
    torch.testing.assert_close(mc_critic_target(y, g, "mc"), torch.tensor([5.0, 2.0, 0.5]))
    torch.testing.assert_close(mc_critic_target(y, g, "max"), torch.tensor([5.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="one of"):
        mc_critic_target(y, g, "lambda")


def test_episode_returns_fill_only_finished_episodes() -> None:
    """Two envs' transitions interleave in the buffer; ending env 1's episode writes G into
    exactly its rows, in its own time order, and env 0's stay NaN until it ends."""
    buf = ReplayBuffer(16, {"reward": (), MC_KEY: ()})
    track = EpisodeReturns(2)
    steps = [([0, 1], [1.0, 10.0]), ([1], [20.0]), ([0, 1], [2.0, 30.0])]
    for envs, rewards in steps:
        rows = buf.add(
            {"reward": torch.tensor(rewards), MC_KEY: torch.full((len(envs),), math.nan)}
        )
        track.add(torch.tensor(envs), rows)
    track.finish(torch.tensor([1]), buf, 0.5)
    mc = buf.data[MC_KEY][: len(buf)]
    torch.testing.assert_close(mc[[1, 2, 4]], torch.tensor([10 + 10 + 7.5, 20 + 15.0, 30.0]))
    assert torch.isnan(mc[[0, 3]]).all()
    assert track.rows == [[0, 3], []]
    track.finish(torch.tensor([0]), buf, 0.5)
    torch.testing.assert_close(buf.data[MC_KEY][[0, 3]], torch.tensor([2.0, 2.0]))
    state = track.state_dict()
    again = EpisodeReturns(2)
    again.load_state_dict(state)
    assert again.rows == track.rows


def test_replay_add_returns_the_rows_written() -> None:
    buf = ReplayBuffer(4, {"x": ()})
    assert buf.add({"x": torch.arange(3.0)}).tolist() == [0, 1, 2]
    assert buf.add({"x": torch.arange(3.0)}).tolist() == [3, 0, 1]
    assert buf.add({"x": torch.arange(6.0)}).tolist() == [-1, -1, 0, 1, 2, 3]


def test_critic_state_norm_is_the_plain_critic_on_normalised_states() -> None:
    torch.manual_seed(0)
    mean, std = torch.randn(5), torch.rand(5) + 0.5
    normed = TwinCritic(5, 3, 16, 2, (mean, std))
    plain = TwinCritic(5, 3, 16, 2)
    plain.load_state_dict({k: v for k, v in normed.state_dict().items() if "state_" not in k})
    s, a = torch.randn(7, 5), torch.randn(7, 3)
    for x, y in zip(normed(s, a), plain((s - mean) / std, a), strict=True):
        torch.testing.assert_close(x, y)
    assert "state_mean" not in plain.state_dict()  # older checkpoints' critics still load
