"""Locomotion suites (SPEC §4, §4.1): formulas on hand-placed states, determinism,
sampling ranges, no model rebuild, validation, env checker, 6-tuple wrapper, no
littering, rendering, video."""

from __future__ import annotations

import math
import os
import pickle
import warnings
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import safemeta
from safemeta.envs.base import CostTuple, Suite
from safemeta.envs.locomotion import (
    DirectionTask,
    HalfCheetahVelSuite,
    HopperVelSuite,
    HumanoidDirSuite,
    SwimmerVelSuite,
    VelocityTask,
)
from safemeta.envs.locomotion import assets as assets_module
from safemeta.envs.video import save_video

SUITE_IDS = ["halfcheetah-vel", "hopper-vel", "swimmer-vel", "humanoid-dir"]
COSTS = ["energy", "velocity"]
# Gymnasium v5 timestep × frame_skip and reward weights, written out by hand.
DT = {"halfcheetah-vel": 0.01 * 5, "hopper-vel": 0.002 * 4, "swimmer-vel": 0.01 * 4}
DT["humanoid-dir"] = 0.003 * 5
THRESHOLD = {"halfcheetah-vel": 3.2096, "hopper-vel": 0.7402, "swimmer-vel": 0.2282}
THRESHOLD["humanoid-dir"] = 1.4149


def make(suite_id: str, cost: str = "energy", param: float = 0.7, **kw: Any) -> gym.Env:
    suite = safemeta.suite(suite_id, cost=cost, **kw)
    task = DirectionTask(param) if suite_id == "humanoid-dir" else VelocityTask(param)
    return suite.make(task)


def com_xy(env: Any) -> np.ndarray:
    """Centre of mass in the plane, by hand from body masses and inertial frames."""
    mass = env.model.body_mass[:, None]
    return (mass * env.data.xipos).sum(0)[:2] / mass.sum()


def expected_step(suite_id: str, env: Any, before: np.ndarray, action: np.ndarray, param: float):
    """(reward, energy cost, speed, terminated) computed by hand from post-step data."""
    dt, action = DT[suite_id], action.astype(np.float64)
    if suite_id == "humanoid-dir":
        vx, vy = (com_xy(env) - before) / dt
        speed = math.hypot(vx, vy)
        healthy = 1.0 < env.data.qpos[2] < 2.0
        forward = vx * math.cos(param) + vy * math.sin(param)
        reward = 1.25 * forward + 5.0 * healthy - 0.1 * float(np.sum(action**2))
    else:
        vx = speed = (env.data.qpos[0] - before[0]) / dt
        reward, healthy = -abs(vx - param), True
        if suite_id == "hopper-vel":
            z, angle = env.data.qpos[1:3]
            rest = np.concatenate([env.data.qpos, env.data.qvel])[2:]
            healthy = z > 0.7 and abs(angle) < 0.2 and bool(np.all(np.abs(rest) < 100))
            reward += 1.0 * healthy - 1e-3 * float(np.sum(action**2))
    low, high = env.model.actuator_ctrlrange.T  # what MuJoCo applies
    energy = float(np.sum(np.clip(action, low, high) ** 2))
    return reward, energy, speed, not healthy


def hand_placed_state(env: Any, forward_speed: float) -> tuple[np.ndarray, np.ndarray]:
    """A fixed pose near the initial one, moving forward at `forward_speed`."""
    rng = np.random.default_rng(7)
    qpos = env.init_qpos + rng.uniform(-0.02, 0.02, env.model.nq)
    qvel = rng.uniform(-0.05, 0.05, env.model.nv)
    qvel[0] = forward_speed
    if env.model.nq == 24:  # humanoid: keep the free joint's quaternion normalised
        qpos[3:7] = env.init_qpos[3:7]
    return qpos, qvel


@pytest.mark.parametrize("cost", COSTS)
@pytest.mark.parametrize("suite_id", SUITE_IDS)
@pytest.mark.parametrize("speed_factor", [0.0, 3.0])
def test_reward_and_cost_on_hand_placed_state(suite_id: str, cost: str, speed_factor: float):
    param = 0.6
    env = make(suite_id, cost=cost, param=param).unwrapped
    env.reset(seed=0)
    env.set_state(*hand_placed_state(env, speed_factor * THRESHOLD[suite_id]))
    before = com_xy(env) if suite_id == "humanoid-dir" else env.data.qpos[:1].copy()
    n = env.action_space.shape[0]
    action = np.linspace(-1.5, 1.5, n).astype(np.float32) * env.action_space.high
    _, reward, terminated, truncated, info = env.step(action)
    exp_reward, energy, speed, exp_terminated = expected_step(suite_id, env, before, action, param)
    assert reward == pytest.approx(exp_reward, rel=1e-9, abs=1e-9)
    expected_cost = energy if cost == "energy" else float(speed > THRESHOLD[suite_id])
    assert info["cost"] == pytest.approx(expected_cost, rel=1e-9)
    assert type(info["cost"]) is float and type(reward) is float
    assert terminated == exp_terminated and not truncated


@pytest.mark.parametrize("suite_id", SUITE_IDS)
def test_velocity_cost_takes_both_values(suite_id: str):
    """The hand-placed states above straddle the threshold: cost 0 slow, 1 fast."""
    costs = []
    for factor in (0.0, 3.0):
        env = make(suite_id, cost="velocity").unwrapped
        env.reset(seed=0)
        env.set_state(*hand_placed_state(env, factor * THRESHOLD[suite_id]))
        costs.append(env.step(np.zeros(env.action_space.shape, np.float32))[4]["cost"])
    assert costs == [0.0, 1.0]


def test_energy_cost_of_zero_action_is_zero():
    env = make("halfcheetah-vel")
    env.reset(seed=0)
    assert env.step(np.zeros(6, np.float32))[4]["cost"] == 0.0


def test_hopper_terminates_when_unhealthy():
    env = make("hopper-vel").unwrapped
    env.reset(seed=0)
    qpos, qvel = env.init_qpos.copy(), env.init_qvel.copy()
    qpos[2] = 0.5  # torso tilted beyond v5's healthy angle range (-0.2, 0.2)
    env.set_state(qpos, qvel)
    _, reward, terminated, _, _ = env.step(np.zeros(3, np.float32))
    assert terminated
    assert reward == pytest.approx(-abs(env.data.qpos[0] - qpos[0]) / DT["hopper-vel"] - 0.7)


def rollout(env: gym.Env, seed: int, steps: int = 30) -> np.ndarray:
    obs, _ = env.reset(seed=seed)
    rng = np.random.default_rng(seed)
    out = [obs]
    for _ in range(steps):
        a = rng.uniform(env.action_space.low, env.action_space.high).astype(np.float32)
        obs, reward, terminated, truncated, info = env.step(a)
        out.append(np.concatenate([obs, [reward, info["cost"]]]))
        if terminated or truncated:
            obs, _ = env.reset()
    return np.concatenate(out)


@pytest.mark.parametrize("suite_id", SUITE_IDS)
def test_same_seed_same_trajectory(suite_id: str):
    a, b = rollout(make(suite_id), seed=3), rollout(make(suite_id), seed=3)
    np.testing.assert_array_equal(a, b)
    env = make(suite_id)
    np.testing.assert_array_equal(rollout(env, seed=3), rollout(env, seed=3))
    assert not np.array_equal(a, rollout(make(suite_id), seed=4))


@pytest.mark.parametrize("suite_id", SUITE_IDS)
@pytest.mark.parametrize("split", ["train", "test", "ood"])
def test_sampling_stays_in_declared_ranges(suite_id: str, split: str):
    suite = safemeta.suite(suite_id)
    (rng_decl,) = suite.param_ranges(split)
    tasks = suite.sample_tasks(2000, np.random.default_rng(0), split=split)
    values = np.array([getattr(t, rng_decl.name) for t in tasks])
    assert values.min() >= rng_decl.low and values.max() <= rng_decl.high
    assert values.max() - values.min() > 0.95 * (rng_decl.high - rng_decl.low)
    for t in tasks[:5]:
        t.validate()
        assert suite.task_from_dict(t.to_dict()) == t
    first = suite.sample_tasks(3, np.random.default_rng(5), split=split)
    assert first == suite.sample_tasks(3, np.random.default_rng(5), split=split)
    with pytest.raises(ValueError, match="split"):
        suite.sample_tasks(1, np.random.default_rng(0), split="validation")


def test_declared_ranges_match_spec():
    expected = {  # (parameter, train and test range, ood range)
        HalfCheetahVelSuite: ("target_velocity", (0.0, 2.0), (2.0, 2.5)),
        HopperVelSuite: ("target_velocity", (0.0, 1.0), (1.0, 1.25)),
        SwimmerVelSuite: ("target_velocity", (0.0, 1.0), (1.0, 1.25)),
        HumanoidDirSuite: ("direction", (0.0, 0.9), (0.9, 1.125)),
    }
    for cls, (name, train, ood) in expected.items():
        for split, (low, high) in (("train", train), ("test", train), ("ood", ood)):
            (r,) = cls().param_ranges(split)
            assert (r.name, r.low, r.high) == (name, low, high)


@pytest.mark.parametrize("suite_id", SUITE_IDS)
def test_reset_and_set_task_do_not_rebuild_model(suite_id: str, monkeypatch):
    env = make(suite_id).unwrapped
    model, data = env.model, env.data

    def forbidden(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("model rebuilt")

    monkeypatch.setattr(assets_module, "compile_model", forbidden)
    monkeypatch.setattr(type(env), "_initialize_simulation", forbidden)
    task = DirectionTask(0.3) if suite_id == "humanoid-dir" else VelocityTask(0.3)
    for seed in range(3):
        env.reset(seed=seed)
        env.step(env.action_space.sample())
        env.set_task(task)
    assert env.model is model and env.data is data and env.task == task


@pytest.mark.parametrize(
    ("record", "name"),
    [
        (lambda: VelocityTask(-0.1), "target_velocity"),
        (lambda: VelocityTask(float("nan")), "target_velocity"),
        (lambda: VelocityTask(float("inf")), "target_velocity"),
        (lambda: DirectionTask(4.0), "direction"),
        (lambda: DirectionTask(float("nan")), "direction"),
    ],
)
def test_impossible_task_parameters_raise(record, name: str):
    with pytest.raises(ValueError, match=name):
        record().validate()


def test_make_and_set_task_validate():
    suite = HalfCheetahVelSuite()
    with pytest.raises(ValueError, match="target_velocity"):
        suite.make(VelocityTask(-1.0))
    env = suite.make(VelocityTask(1.0))
    with pytest.raises(ValueError, match="target_velocity"):
        env.set_task(VelocityTask(-1.0))
    with pytest.raises(ValueError, match="task"):
        env.set_task(DirectionTask(0.1))
    with pytest.raises(ValueError, match="direction"):
        HumanoidDirSuite().task_from_dict({"direction": 7.0})


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"cost": "speed"}, "cost"),
        ({"horizon": 0}, "horizon"),
        ({"horizon": 2.5}, "horizon"),
        ({"cost_limit": -1.0}, "cost_limit"),
        ({"cost_limit": float("nan")}, "cost_limit"),
    ],
)
def test_bad_suite_options_raise(kwargs: dict[str, Any], name: str):
    with pytest.raises(ValueError, match=name):
        safemeta.suite("hopper-vel", **kwargs)


@pytest.mark.parametrize("suite_id", SUITE_IDS)
def test_suite_attributes(suite_id: str):
    suite: Suite = safemeta.suite(suite_id)
    assert suite.id == suite_id and suite.family == "continuous"
    assert suite.horizon == 200 and suite.cost_type == "undiscounted"
    assert suite.cost_limit > 0 and "||a||^2" in suite.cost_doc
    velocity = safemeta.suite(suite_id, cost="velocity", horizon=100, cost_limit=7.0)
    assert velocity.cost_limit == 7.0 and str(THRESHOLD[suite_id]) in velocity.cost_doc
    halved = safemeta.suite(suite_id, horizon=100)
    assert halved.cost_limit == pytest.approx(suite.cost_limit / 2)


@pytest.mark.parametrize("suite_id", SUITE_IDS)
def test_time_limit_built_in(suite_id: str):
    env = make(suite_id, horizon=3)
    env.reset(seed=0)
    flags = [env.step(np.zeros(env.action_space.shape, np.float32))[3] for _ in range(3)]
    assert flags == [False, False, True]
    env.reset(seed=0)
    assert not env.step(np.zeros(env.action_space.shape, np.float32))[3]


@pytest.mark.parametrize("suite_id", SUITE_IDS)
def test_env_checker_passes(suite_id: str):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # infinite Box bounds, no spec: Gymnasium's own v5 too
        check_env(make(suite_id).unwrapped)


def test_pickle_keeps_task_and_options():
    env = make("halfcheetah-vel", cost="velocity", horizon=50)
    env.set_task(VelocityTask(1.5))
    copy = pickle.loads(pickle.dumps(env))
    assert copy.task == VelocityTask(1.5) and copy.cost_kind == "velocity" and copy.horizon == 50


def test_sync_vector_env_over_tasks():
    """A meta-batch of tasks stepped together (SPEC §9): costs arrive as an array."""
    suite = HalfCheetahVelSuite()
    tasks = suite.sample_tasks(3, np.random.default_rng(0))
    venv = gym.vector.SyncVectorEnv([lambda t=t: suite.make(t) for t in tasks])
    venv.reset(seed=0)
    actions = np.full((3, 6), 0.5, np.float32)
    _, reward, _, _, info = venv.step(actions)
    np.testing.assert_allclose(info["cost"], [1.5, 1.5, 1.5])
    assert reward.shape == (3,)
    assert [e.unwrapped.task for e in venv.envs] == tasks
    venv.close()


def test_cost_tuple_wrapper():
    env = CostTuple(make("swimmer-vel"))
    env.reset(seed=0)
    out = env.step(np.array([0.5, -0.5], np.float32))
    assert len(out) == 6
    obs, reward, cost, _, _, info = out
    assert cost == info["cost"] == pytest.approx(0.5)
    assert obs.shape == (8,) and isinstance(reward, float)


@pytest.mark.parametrize("suite_id", SUITE_IDS)
def test_no_littering(suite_id: str, tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)
    env = make(suite_id)
    env.reset(seed=0)
    for _ in range(5):
        env.step(env.action_space.sample())
    env.close()
    assert os.listdir(tmp_path) == []
    out, err = capfd.readouterr()
    assert "deprecated" not in out + err and "WARNING" not in out + err


def test_patched_cheetah_model_matches_original_masses():
    model = assets_module.compile_model("half_cheetah.xml")
    assert model.body_mass.sum() == pytest.approx(14.0)
    text, total = assets_module.patched_xml("half_cheetah.xml")
    assert total == 14.0 and "settotalmass" not in text


def _render_or_skip(suite_id: str) -> np.ndarray:
    suite = safemeta.suite(suite_id)
    task = suite.sample_tasks(1, np.random.default_rng(0))[0]
    env = suite.make(task, render_mode="rgb_array", width=80, height=60)
    env.reset(seed=0)
    try:
        frame = env.render()
    except (RuntimeError, ImportError, OSError, AttributeError, mujoco.FatalError) as exc:
        pytest.skip(f"offscreen OpenGL unavailable (MUJOCO_GL={os.environ.get('MUJOCO_GL')}): {exc}")
    finally:
        env.close()
    return frame


@pytest.mark.parametrize("suite_id", ["halfcheetah-vel", "humanoid-dir"])
def test_render_rgb_array(suite_id: str):
    frame = _render_or_skip(suite_id)
    assert frame.shape == (60, 80, 3) and frame.dtype == np.uint8
    assert frame.std() > 0  # not a blank image


def test_save_video_gif(tmp_path):
    import imageio.v3 as iio

    frames = [np.full((12, 16, 3), 40 * i, np.uint8) for i in range(4)]
    path = str(tmp_path / "sub" / "clip.gif")
    save_video(frames, path, fps=10)
    read = iio.imread(path)
    assert read.shape[0] == 4 and read.shape[1:3] == (12, 16)
    with pytest.raises(ValueError, match="path"):
        save_video(frames, str(tmp_path / "clip.avi"))
    with pytest.raises(ValueError, match="frames"):
        save_video([], str(tmp_path / "clip.gif"))
    with pytest.raises(ValueError, match="frames"):
        save_video([frames[0], frames[0][:5]], str(tmp_path / "clip.gif"))
