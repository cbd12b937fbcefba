"""AMP's discriminator, replay buffer and style reward, and the tracking reward kernels (no rl-games loop)."""

import pytest
import torch

from near.errors import ConfigError
from near.training.algos import amp, tracking

torch.set_num_threads(1)


def test_discriminator_learns_to_separate_demo_from_policy_transitions_and_rewards_demo_like_ones():
    torch.manual_seed(0)
    demo = torch.randn(512, 4) * 0.2 + torch.tensor([1.0, 1.0, 0.0, 0.0])
    agent = torch.randn(512, 4) * 0.2 - torch.tensor([1.0, 1.0, 0.0, 0.0])
    disc = amp.Discriminator(4, (32, 32))
    opt = torch.optim.Adam(disc.parameters(), lr=3e-3)
    first = None
    for _ in range(150):
        loss, info = amp.disc_loss(disc, demo, agent, grad_penalty=0.1, logit_reg=0.01, weight_decay=1e-4)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = float(info["disc_bce"]) if first is None else first
    assert float(info["disc_bce"]) < 0.5 * first
    assert float(info["disc_demo_acc"]) > 0.95 and float(info["disc_agent_acc"]) > 0.95
    r_demo = amp.style_reward(disc, demo, scale=2.0).mean()
    r_agent = amp.style_reward(disc, agent, scale=2.0).mean()
    assert float(r_demo) > 3 * float(r_agent) and float(r_agent) >= 0


def test_gradient_penalty_is_zero_for_a_constant_discriminator():
    disc = amp.Discriminator(3, (8,))
    for p in disc.parameters():
        torch.nn.init.zeros_(p)
    _, info = amp.disc_loss(disc, torch.randn(10, 3), torch.randn(10, 3))
    assert float(info["disc_grad_penalty"]) == 0.0
    assert float(info["disc_bce"]) == pytest.approx(torch.log(torch.tensor(2.0)).item(), rel=1e-6)


def test_replay_buffer_is_a_ring_and_round_trips():
    buf = amp.ReplayBuffer(5, 2)
    buf.store(torch.arange(8.0).reshape(4, 2))
    buf.store(torch.arange(8.0, 14.0).reshape(3, 2))  # wraps: rows 4,5,6 overwrite the oldest two
    assert buf.size == 5
    assert set(buf.data[:, 0].tolist()) == {2.0, 4.0, 6.0, 8.0, 10.0, 12.0} - {2.0}
    other = amp.ReplayBuffer(5, 2)
    other.load_state_dict(buf.state_dict())
    assert torch.equal(other.data, buf.data) and other.head == buf.head
    assert other.sample(7).shape == (7, 2)
    with pytest.raises(RuntimeError):
        amp.ReplayBuffer(3, 2).sample(1)


def test_replay_keeps_every_transition_until_filled_once_then_a_fraction():
    torch.manual_seed(0)
    buf = amp.ReplayBuffer(1000, 1)
    assert bool(amp.replay_keep(buf, 600, 0.01, "cpu").all())
    buf.store(torch.zeros(600, 1))
    assert bool(amp.replay_keep(buf, 600, 0.01, "cpu").all())  # 600 of 1000 stored so far
    buf.store(torch.zeros(600, 1))
    assert buf.total == 1200 and buf.size == 1000
    kept = amp.replay_keep(buf, 100_000, 0.01, "cpu")
    assert 800 < int(kept.sum()) < 1200
    other = amp.ReplayBuffer(1000, 1)
    other.load_state_dict(buf.state_dict())
    assert other.total == 1200  # a resumed run goes on keeping 1 %, not everything


def test_tracking_reward_is_one_at_the_reference_and_falls_with_each_error():
    groups = {"pose": [0, 1], "velocity": [2, 3], "end": [4, 5]}
    ref = torch.zeros(1, 6)
    scales = {"pose": 10.0, "velocity": 0.5, "end": 10.0}
    perfect = tracking.tracking_reward(tracking.tracking_errors(ref, ref, groups), scales)
    assert float(perfect) == pytest.approx(1.0)
    rewards = []
    for off in (0.1, 0.2, 0.4):
        s = ref.clone()
        s[0, 0] = off
        rewards.append(float(tracking.tracking_reward(tracking.tracking_errors(s, ref, groups), scales)))
    assert rewards[0] > rewards[1] > rewards[2] > 0
    assert rewards[0] == pytest.approx(float(torch.exp(torch.tensor(-10 * 0.01))), rel=1e-6)
    # product: one bad group ruins the reward; sum: it only costs its weight
    s = ref.clone()
    s[0, 4] = 2.0
    err = tracking.tracking_errors(s, ref, groups)
    assert float(tracking.tracking_reward(err, scales, combine="product")) < 1e-6
    assert float(tracking.tracking_reward(err, scales, combine="sum")) == pytest.approx(2 / 3, rel=1e-4)
    with pytest.raises(ConfigError, match="combine"):
        tracking.tracking_reward(err, scales, combine="max")
