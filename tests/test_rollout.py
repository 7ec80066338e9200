"""Batched sampler, buffer and GAE (SPEC §2.4 step 1): hand-computed oracles."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from safemeta.nn.policy import GaussianPolicy
from safemeta.rollout.advantages import task_advantages
from safemeta.rollout.buffer import Rollout, gae, next_values
from safemeta.rollout.sampler import Sampler, TaskStream
from safemeta.rollout.toy import GoalTask, PointMassSuite

GAMMA, LAM = 0.9, 0.8


def hand_gae() -> tuple[np.ndarray, np.ndarray]:
    """Two episodes: 3 steps truncated (bootstrap V_final), then 2 steps terminated.

    Column 0 is the reward, column 1 a cost; every number below is worked by hand.
    """
    # reward: r = [1, 2, 3 | 1, -1], V = [.5, .4, .3 | .2, .1], V(final obs of ep 1) = .7
    # δ = [1 + .9*.4 - .5, 2 + .9*.3 - .4, 3 + .9*.7 - .3 | 1 + .9*.1 - .2, -1 - .1]
    #   = [0.86, 1.87, 3.33 | 0.89, -1.1];  γλ = 0.72
    # A = [0.86 + .72*4.2676, 1.87 + .72*3.33, 3.33 | 0.89 + .72*(-1.1), -1.1]
    reward_adv = [3.932672, 4.2676, 3.33, 0.098, -1.1]
    # cost: c = [0, 1, 0 | 2, 0], V_c = [1, 1, 0 | 2, 0], V_c(final) = 2
    # δ = [0 + .9 - 1, 1 + 0 - 1, 0 + 1.8 - 0 | 2 + 0 - 2, 0 - 0] = [-.1, 0, 1.8 | 0, 0]
    # A = [-.1 + .72*1.296, 0 + .72*1.8, 1.8 | 0, 0]
    cost_adv = [0.83312, 1.296, 1.8, 0.0, 0.0]
    return np.array(reward_adv), np.array(cost_adv)


def hand_rollout() -> Rollout:
    obs = np.array([[0.5, 1], [0.4, 1], [0.3, 0], [0.2, 2], [0.1, 0]], np.float32)  # (V, V_c) in obs
    return Rollout(
        obs=obs,
        act=np.zeros((5, 1), np.float32),
        logp=np.zeros(5),
        reward=np.array([1.0, 2, 3, 1, -1]),
        cost=np.array([[0.0], [1], [0], [2], [0]]),
        t=np.array([0, 1, 2, 0, 1]),
        terminated=np.array([0, 0, 0, 0, 1], bool),
        truncated=np.array([0, 0, 1, 0, 0], bool),
        final_obs=np.array([[0.7, 2.0]], np.float32),
        slices=[slice(0, 5)],
        ep_return=[np.array([6.0, 0.0])],
        ep_cost=[np.array([[1.0], [2.0]])],
        ep_disc_cost=[np.array([[0.9], [2.0]])],
        ep_length=[np.array([3, 2])],
    )


def test_gae_reward_and_cost_hand_computed_with_truncation_bootstrap() -> None:
    roll = hand_rollout()
    value = roll.obs.astype(np.float64)  # column 0: V, column 1: V_c
    final_value = roll.final_obs.astype(np.float64)
    rc = np.concatenate([roll.reward[:, None], roll.cost], axis=1)
    adv = gae(
        rc, value, next_values(value, final_value, roll.truncated), roll.terminated, roll.done, GAMMA, LAM
    )
    reward_adv, cost_adv = hand_gae()
    np.testing.assert_allclose(adv[:, 0], reward_adv, atol=1e-6)
    np.testing.assert_allclose(adv[:, 1], cost_adv, atol=1e-6)


class ObsCritic:
    """A stub critic whose values are the observation itself (reward, cost columns)."""

    def predict(self, obs: np.ndarray, t: np.ndarray) -> np.ndarray:
        return obs.astype(np.float64)


def test_task_advantages_uses_final_obs_for_bootstrap() -> None:
    """The wiring the adaptation step uses: critic on obs and on final obs, then GAE."""
    roll = hand_rollout()
    policy = GaussianPolicy(2, 1)  # fresh normaliser: identity (mean 0, var 1)
    a = task_advantages(roll, ObsCritic(), policy, GAMMA, LAM, "undiscounted", "auto", normalize_adv=False)
    reward_adv, cost_adv = hand_gae()
    np.testing.assert_allclose(a.adv, reward_adv, atol=1e-5)
    np.testing.assert_allclose(a.cost_adv[:, 0], cost_adv - cost_adv.mean(), atol=1e-5)  # centred
    np.testing.assert_allclose(a.cost_value, [1.5])  # mean undiscounted episode cost
    assert a.kappa == pytest.approx(2.5)  # "auto": mean episode length for an undiscounted limit


def collect(
    suite: PointMassSuite,
    policies: list[GaussianPolicy],
    episodes: int,
    seed: int = 0,
    envs_per_task: int = 0,
    gamma: float = 0.95,
) -> Rollout:
    tasks = [GoalTask(0.5), GoalTask(-0.5)][: len(policies)]
    sampler = Sampler(suite, suite.horizon, gamma, envs_per_task)
    streams = [TaskStream.of(seed, (i,)) for i in range(len(tasks))]
    return sampler.collect(tasks, policies, streams, episodes)


def test_sampler_episode_statistics_and_final_obs() -> None:
    suite = PointMassSuite(horizon=7)
    torch.manual_seed(0)
    pol = GaussianPolicy(2, 1)
    roll = collect(suite, [pol, pol], episodes=5, envs_per_task=2)
    for i, s in enumerate(roll.slices):
        assert len(roll.ep_return[i]) == 5 and np.all(roll.ep_length[i] == 7)
        rew, cost, t = roll.reward[s].reshape(5, 7), roll.cost[s, 0].reshape(5, 7), roll.t[s].reshape(5, 7)
        np.testing.assert_allclose(np.sort(roll.ep_return[i]), np.sort(rew.sum(1)))
        np.testing.assert_allclose(np.sort(roll.ep_cost[i][:, 0]), np.sort(cost.sum(1)))
        np.testing.assert_allclose(np.sort(roll.ep_disc_cost[i][:, 0]), np.sort((cost * 0.95**t).sum(1)))
        act = np.clip(roll.act[s, 0], -1, 1)
        np.testing.assert_allclose(roll.cost[s, 0], act**2, rtol=1e-5)  # energy of the clipped action
    assert roll.truncated.sum() == 10 and not roll.terminated.any()
    np.testing.assert_allclose(roll.final_obs[:, 1], 1.0)  # t/H = 1: the true last observation
    # the stored next obs of a non-final step continues the same episode: x' = x + 0.2 clip(a)
    nxt = ~roll.done[:-1]
    dx = roll.obs[1:, 0] - roll.obs[:-1, 0]
    np.testing.assert_allclose(dx[nxt], 0.2 * np.clip(roll.act[:-1, 0], -1, 1)[nxt], atol=1e-5)


def test_sampler_terminations_and_logp() -> None:
    suite = PointMassSuite(horizon=20, terminate_at=0.25)
    torch.manual_seed(1)
    pol = GaussianPolicy(2, 1, init_log_std=0.5)
    roll = collect(suite, [pol], episodes=6, envs_per_task=4)
    assert roll.terminated.any() and len(roll.ep_length[0]) == 6
    assert roll.done.sum() == 6 and roll.ep_length[0].sum() == len(roll.obs)
    x_end = roll.obs[roll.terminated, 0] + 0.2 * np.clip(roll.act[roll.terminated, 0], -1, 1)
    assert np.all(np.abs(x_end) > 0.25)
    with torch.no_grad():
        logp = pol.log_prob(torch.as_tensor(roll.obs), torch.as_tensor(roll.act)).numpy()
    np.testing.assert_allclose(roll.logp, logp, atol=1e-5)


def test_per_task_policies_act_on_their_own_task() -> None:
    suite = PointMassSuite(horizon=5)
    pols = [GaussianPolicy(2, 1, init_log_std=-5.0) for _ in range(2)]
    for pol, bias in zip(pols, (0.7, -0.3)):
        with torch.no_grad():
            pol.mean_net[-1].bias.fill_(bias)
            pol.mean_net[-1].weight.zero_()
    roll = collect(suite, pols, episodes=3)
    np.testing.assert_allclose(roll.act[roll.slices[0], 0], 0.7, atol=0.05)
    np.testing.assert_allclose(roll.act[roll.slices[1], 0], -0.3, atol=0.05)


def test_sampler_is_deterministic_and_restores_threads() -> None:
    suite = PointMassSuite(horizon=6)
    torch.manual_seed(0)
    pol = GaussianPolicy(2, 1)
    threads = torch.get_num_threads()
    a, b = collect(suite, [pol, pol], 4, seed=3), collect(suite, [pol, pol], 4, seed=3)
    assert torch.get_num_threads() == threads
    np.testing.assert_array_equal(a.obs, b.obs)
    np.testing.assert_array_equal(a.act, b.act)
    c = collect(suite, [pol, pol], 4, seed=4)
    assert not np.array_equal(a.act, c.act)


def test_multi_cost_info_array() -> None:
    from safemeta.rollout.batch import cost_vector

    np.testing.assert_array_equal(cost_vector({"cost": np.array([1.0, 2.0])}, 2), [1.0, 2.0])
    np.testing.assert_array_equal(cost_vector({"cost": 0.5}, 1), [0.5])
    with pytest.raises(ValueError, match="cost"):
        cost_vector({"cost": 0.5}, 2)


def test_stacked_policies_equal_individual_policies() -> None:
    from safemeta.nn.policy import StackedGaussian

    torch.manual_seed(0)
    pols = [GaussianPolicy(3, 2, hidden=[5, 4], init_log_std=-0.3 * i) for i in range(3)]
    for p in pols:
        p.normalizer.update(np.random.default_rng(0).normal(2.0, 3.0, (50, 3)))
    stack = StackedGaussian(pols)
    obs = torch.randn(3, 7, 3)
    act = torch.randn(3, 7, 2)
    with torch.no_grad():
        lp = stack.log_prob(obs, act)
        for i, p in enumerate(pols):
            torch.testing.assert_close(lp[i], p.log_prob(obs[i], act[i]))
        for i, p in enumerate(stack.unstack(pols[0])):
            torch.testing.assert_close(p.flat_params(), pols[i].flat_params())


def test_per_task_policies_with_different_normalisers_fall_back_to_a_loop() -> None:
    """Each task's actions come from its own policy, normaliser included: the recorded
    log-probabilities equal each policy's own (a shared normaliser would break this)."""
    suite = PointMassSuite(horizon=5)
    torch.manual_seed(0)
    pols = [GaussianPolicy(2, 1, init_log_std=-1.0) for _ in range(2)]
    pols[1].normalizer.update(np.array([[5.0, 5.0], [7.0, 9.0]]))
    for pol in pols:  # outputs that depend on the (normalised) observation
        with torch.no_grad():
            pol.mean_net[-1].weight.normal_(0.0, 1.0)
    roll = collect(suite, pols, episodes=3)
    for i, pol in enumerate(pols):
        s = roll.slices[i]
        with torch.no_grad():
            own = pol.log_prob(torch.as_tensor(roll.obs[s]), torch.as_tensor(roll.act[s])).numpy()
            other = pols[1 - i].log_prob(torch.as_tensor(roll.obs[s]), torch.as_tensor(roll.act[s])).numpy()
        np.testing.assert_allclose(roll.logp[s], own, atol=1e-5)
        assert np.abs(roll.logp[s] - other).max() > 1e-2  # the two policies really differ
