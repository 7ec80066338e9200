"""Navigation suites (SPEC §4.2): formulas on hand-placed states, lidar, determinism,
task sampling, no recompilation on reset, validation, env checker, rendering."""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import mujoco
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

import safemeta
from safemeta.envs.base import CostTuple, Task
from safemeta.envs.navigation import (
    ButtonTask,
    CarCircleSuite,
    CarCircleTask,
    CircleTask,
    PointButtonSuite,
    PointCircleSuite,
)
from safemeta.envs.navigation import lidar as lid
from safemeta.envs.navigation.engine import NavEnv, compile_count

SUITES = ["point-circle", "car-circle", "car-circle-nohazards", "point-button"]
ZERO = np.zeros(2, dtype=np.float32)
BIN = 2 * math.pi / 16


def make(suite_id: str, seed: int = 0, split: str = "train", **kwargs: object) -> NavEnv:
    suite = safemeta.suite(suite_id)
    env = suite.make(suite.sample_tasks(1, np.random.default_rng(seed), split)[0], **kwargs)
    assert isinstance(env, NavEnv)
    return env


def place(env: NavEnv, qpos: list[float], qvel: list[float]) -> None:
    """Reset, then put the agent in the given joint state (first entries of qpos/qvel)."""
    env.reset(seed=0)
    env.data.qpos[: len(qpos)] = qpos
    env.data.qvel[:] = 0.0
    env.data.qvel[: len(qvel)] = qvel
    mujoco.mj_forward(env.model, env.data)


def circle_formula(x: float, y: float, u: float, v: float, radius: float) -> float:
    """SPEC §4.2, written out by hand."""
    r = math.sqrt(x * x + y * y)
    return 0.1 * ((-u * y + v * x) / r) / (1 + abs(r - radius))


# -- observation layout and spaces ----------------------------------------------------

@pytest.mark.parametrize(("suite_id", "size"),
                         [("point-circle", 28), ("car-circle", 56), ("point-button", 76)])
def test_observation_and_action_spaces(suite_id: str, size: int) -> None:
    env = make(suite_id)
    obs, info = env.reset(seed=0)
    assert env.observation_space.shape == (size,) and obs.shape == (size,)
    assert obs.dtype == np.float64 and info == {}
    assert env.action_space.dtype == np.float32 and env.action_space.shape == (2,)
    assert np.all(env.action_space.low == -1) and np.all(env.action_space.high == 1)
    _, reward, terminated, truncated, info = env.step(ZERO)
    assert isinstance(reward, float) and isinstance(info["cost"], float)
    assert not terminated and not truncated


def test_car_sensor_layout_orientation_matrix() -> None:
    """Car: 12 sensors, rear-ball angular velocity (3), rear-ball orientation 3×3."""
    env = make("car-circle")
    obs, _ = env.reset(seed=0)
    np.testing.assert_allclose(obs[:12], env.data.sensordata[:12])
    np.testing.assert_allclose(obs[15:24].reshape(3, 3), np.eye(3), atol=1e-9)  # ball at rest
    assert env.model.sensor("ballquat_rear").adr[0] == 15


# -- reward and cost formulas on hand-placed states ---------------------------------

def test_point_circle_reward_on_hand_placed_state() -> None:
    env = PointCircleSuite().make(CircleTask(radius=1.5, wall=1.0))
    place(env, [0.0, 1.2, math.pi], [-0.4, 0.05])  # at (0, 1.2) running counter-clockwise
    _, reward, _, _, info = env.step(ZERO)
    x, y = env.data.qpos[0], env.data.qpos[1]
    u, v = env.data.qvel[0], env.data.qvel[1]
    assert reward == pytest.approx(circle_formula(x, y, u, v, 1.5), rel=1e-9)
    assert reward > 0.02  # ≈ 0.1·0.4/(1 + 0.3)
    assert info["cost"] == 0.0 and info["cost_walls"] == 0.0


@pytest.mark.parametrize(("x", "cost"), [(1.05, 1.0), (-1.05, 1.0), (0.95, 0.0), (-0.95, 0.0)])
def test_point_circle_wall_cost(x: float, cost: float) -> None:
    env = PointCircleSuite().make(CircleTask(radius=1.5, wall=1.0))
    place(env, [x, 0.3, 0.0], [0.0, 0.0])
    _, reward, _, _, info = env.step(ZERO)
    assert info["cost"] == cost and info["cost_walls"] == cost
    assert reward == pytest.approx(circle_formula(env.data.qpos[0], env.data.qpos[1],
                                                  env.data.qvel[0], env.data.qvel[1], 1.5))


def test_car_circle_reward_and_hazard_depth_cost() -> None:
    task = CarCircleTask(radius=1.2, wall=0.8, hazards=((0.05, 1.0), (-1.0, -1.0)))
    env = CarCircleSuite().make(task)
    place(env, [0.0, 1.0, 0.1, 1.0, 0.0, 0.0, 0.0], [-0.3, 0.0, 0.0])
    _, reward, _, _, info = env.step(ZERO)
    x, y = env.data.qpos[0], env.data.qpos[1]
    u, v = env.data.qvel[0], env.data.qvel[1]
    assert reward == pytest.approx(circle_formula(x, y, u, v, 1.2), rel=1e-9)
    depth = 0.12 - math.hypot(x - 0.05, y - 1.0)  # inside the first hazard only
    assert depth > 0
    assert info["cost_hazards"] == pytest.approx(depth, rel=1e-9)
    assert info["cost"] == 1.0 and info["cost_walls"] == 0.0


BUTTONS = ((-1.0, -1.0), (-1.0, 1.0), (1.0, -1.0), (1.0, 1.0))


def button_env(hazards: tuple = (), gremlins: tuple = ()) -> NavEnv:
    task = ButtonTask(extent=1.5, buttons=BUTTONS, hazards=hazards, gremlins=gremlins)
    env = PointButtonSuite().make(task)
    env.reset(seed=0)
    return env


def put(env: NavEnv, x: float, y: float, heading: float = 0.0) -> None:
    env.data.qpos[:3] = (x, y, heading)
    env.data.qvel[:] = 0.0
    mujoco.mj_forward(env.model, env.data)
    env.last_dist_goal = math.hypot(x - env.buttons[env.goal][0], y - env.buttons[env.goal][1])


def test_button_progress_reward_and_hazard_cost() -> None:
    env = button_env(hazards=((0.0, 0.0),))
    put(env, 0.08, 0.0)
    env.data.qvel[:2] = (0.2, -0.1)
    last = env.last_dist_goal
    _, reward, _, _, info = env.step(ZERO)
    x, y = env.data.qpos[0], env.data.qpos[1]
    gx, gy = BUTTONS[env.goal]
    assert reward == pytest.approx(last - math.hypot(x - gx, y - gy), rel=1e-9)
    assert info["cost_hazards"] == pytest.approx(0.2 - math.hypot(x, y), rel=1e-9)
    assert info["cost"] == 1.0 and info["cost_buttons"] == 0.0 and info["cost_gremlins"] == 0.0


def press(env: NavEnv, button: int, steps: int = 30) -> list[tuple[float, dict]]:
    """Drive the point straight into `button` from 0.25 to its left; rewards and infos."""
    bx, by = BUTTONS[button]
    put(env, bx - 0.25, by, 0.0)
    out = []
    for _ in range(steps):
        _, reward, _, _, info = env.step(np.array([1.0, 0.0], np.float32))
        out.append((reward, info))
    return out


def test_button_press_gives_goal_reward_new_goal_and_pause() -> None:
    env = button_env()
    goal = env.goal
    steps = press(env, goal)
    k = next(i for i, (_, info) in enumerate(steps) if info["goal_pressed"])
    assert steps[k][0] > 1.0  # progress + 1
    assert env.goal != goal and env.goal in range(4)
    # The pause: 10 steps after the press the buttons lidar is zero and presses are ignored.
    assert all(not info["goal_pressed"] for _, info in steps[k + 1:k + 10])
    assert all(info["cost_buttons"] == 0.0 for _, info in steps[k + 1:k + 11])


def test_button_lidar_zero_during_pause() -> None:
    env = button_env()
    env.timer = 5
    obs, *_ = env.step(ZERO)
    assert np.all(obs[12:28] == 0.0) and np.any(obs[28:44] > 0.0)
    env.timer = 0
    obs, *_ = env.step(ZERO)
    assert np.any(obs[12:28] > 0.0)


def test_wrong_button_costs_outside_the_pause_only() -> None:
    env = button_env()
    wrong = (env.goal + 1) % 4
    assert any(info["cost_buttons"] == 1.0 and info["cost"] == 1.0
               for _, info in press(env, wrong))
    env.timer = 10**6  # a pause that does not end
    assert all(info["cost_buttons"] == 0.0 for _, info in press(env, wrong))


def test_gremlin_target_orbit_and_contact_cost() -> None:
    env = button_env(gremlins=((0.0, 0.0),))
    env.step(ZERO)
    t = env.data.time - env.dt + 4.5 * 0.002  # set before the step, at the substeps' mean phase
    np.testing.assert_allclose(env.data.mocap_pos[0], (0.35 * math.sin(t), 0.35 * math.cos(t), 0.2),
                               atol=1e-12)
    box = env.data.body("gremlin0").xpos.copy()  # the welded box, on its way to the target
    put(env, box[0] + 0.19, box[1])  # sphere (0.1) pressed against the box (half 0.1)
    _, _, _, _, info = env.step(ZERO)
    assert info["cost_gremlins"] >= 1.0 and info["cost"] == 1.0


# -- lidar --------------------------------------------------------------------------

def test_lidar_bin_centre_and_neighbours() -> None:
    # Straight ahead at distance 1 (max_dist 3): bin 0, alias 0 -> bin 15 gets it all.
    out = lid.lidar(np.array([[1.0, 0.0]]), max_dist=3.0)
    expect = np.zeros(16)
    expect[0] = expect[15] = 2 / 3
    np.testing.assert_allclose(out, expect)


@pytest.mark.parametrize(("bins", "dist"), [(1.5, 1.0), (3.25, 2.0), (15.9, 0.5)])
def test_lidar_aliasing(bins: float, dist: float) -> None:
    angle = bins * BIN
    out = lid.lidar(np.array([[dist * math.cos(angle), dist * math.sin(angle)]]), max_dist=3.0)
    s = (3.0 - dist) / 3.0
    b, frac = int(bins), bins - int(bins)
    expect = np.zeros(16)
    expect[b] = s
    expect[(b + 1) % 16] = frac * s
    expect[(b - 1) % 16] = (1 - frac) * s
    np.testing.assert_allclose(out, expect, atol=1e-12)


def test_lidar_max_pooling_and_range() -> None:
    near, far, beyond = [0.5, 0.01], [2.0, 0.02], [3.5, 0.0]
    out = lid.lidar(np.array([far, near, beyond]), max_dist=3.0)
    assert out[0] == pytest.approx((3.0 - math.hypot(*near)) / 3.0)  # the nearer one wins
    assert lid.lidar(np.array([beyond]), max_dist=3.0).sum() == 0.0
    assert lid.lidar(np.zeros((0, 2)), max_dist=3.0).sum() == 0.0


def test_vectorised_lidar_matches_scalar() -> None:
    rng = np.random.default_rng(0)
    ego = rng.uniform(-4, 4, (12, 2))
    ego[0] = (1.0, -1e-17)  # an angle that rounds to 2π
    blocks = rng.integers(0, 3, 12)
    out = np.full(48, 9.0)  # overwritten
    lid.scatter(out, ego, blocks.tolist(), max_dist=3.0)
    for k in range(3):
        np.testing.assert_allclose(out[16 * k:16 * (k + 1)],
                                   lid.lidar(ego[blocks == k], max_dist=3.0), atol=1e-12)


def test_button_lidars_in_env() -> None:
    env = button_env(hazards=((0.5, 0.0), (0.0, -0.6)), gremlins=((-0.3, 0.4),))
    env.action_space.seed(0)
    for _ in range(40):
        obs, *_ = env.step(env.action_space.sample())
    pos, mat = env.data.body("agent").xpos, env.data.body("agent").xmat
    groups = [np.array(BUTTONS), np.array([BUTTONS[env.goal]]), np.array(env.task.hazards),
              env.data.body("gremlin0").xpos[None, :2]]  # the box, not its target
    if env.timer:
        groups[0] = groups[0][:0]
    for k, points in enumerate(groups):
        expect = lid.lidar(lid.ego_xy(points, pos, mat), max_dist=3.0)
        np.testing.assert_allclose(obs[12 + 16 * k:28 + 16 * k], expect, atol=1e-12)


def test_ego_frame_rotation() -> None:
    pos = np.array([1.0, 1.0, 0.1])
    yaw = math.pi / 2  # facing world +y
    mat = np.array([[math.cos(yaw), -math.sin(yaw), 0], [math.sin(yaw), math.cos(yaw), 0],
                    [0, 0, 1.0]])
    ego = lid.ego_xy(np.array([[1.0, 2.0], [0.0, 1.0]]), pos, mat.ravel())
    np.testing.assert_allclose(ego, [[1.0, 0.0], [0.0, 1.0]], atol=1e-12)  # ahead; left


def test_circle_lidar_in_env_points_at_origin() -> None:
    env = PointCircleSuite().make(CircleTask(radius=1.5, wall=1.0))
    # At (0, -2) facing +x: the origin is 2 away on the left (90°, bin 4, alias 0).
    place(env, [0.0, -2.0, 0.0], [0.0, 0.0])
    obs, *_ = env.step(ZERO)
    s = (6.0 - 2.0) / 6.0
    expect = np.zeros(16)
    expect[4] = expect[3] = s
    np.testing.assert_allclose(obs[12:28], expect, atol=2e-3)


# -- determinism, sampling, no recompilation ----------------------------------------

def rollout(suite_id: str, seed: int, steps: int = 60) -> list[np.ndarray]:
    env = make(suite_id, seed=seed)
    obs, _ = env.reset(seed=seed)
    env.action_space.seed(seed)
    out = [obs]
    for _ in range(steps):
        obs, reward, _, _, info = env.step(env.action_space.sample())
        out.append(np.r_[obs, reward, info["cost"]])
    return out


@pytest.mark.parametrize("suite_id", SUITES)
def test_same_seed_same_trajectory(suite_id: str) -> None:
    a, b, c = rollout(suite_id, 3), rollout(suite_id, 3), rollout(suite_id, 4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])


def task_values(task: Task) -> dict[str, float]:
    if isinstance(task, ButtonTask):
        return {"extent": task.extent, "num_hazards": len(task.hazards),
                "num_gremlins": len(task.gremlins)}
    values = {"radius": task.radius, "wall_factor": task.wall / task.radius}
    if isinstance(task, CarCircleTask):
        values["num_hazards"] = len(task.hazards)
    return values


@pytest.mark.parametrize("suite_id", SUITES)
@pytest.mark.parametrize("split", ["train", "test", "ood"])
def test_sampling_stays_in_declared_ranges(suite_id: str, split: str) -> None:
    suite = safemeta.suite(suite_id)
    tasks = suite.sample_tasks(40, np.random.default_rng(1), split)
    ranges = {r.name: r for r in suite.param_ranges(split)}
    for task in tasks:
        task.validate()
        values = task_values(task)
        assert set(values) == set(ranges)
        for name, value in values.items():
            assert ranges[name].low - 1e-12 <= value <= ranges[name].high + 1e-12, (name, value)
    assert suite.task_from_dict(tasks[0].to_dict()) == tasks[0]


def test_start_uniform_in_box_with_random_heading() -> None:
    env = make("point-circle")
    starts = np.array([env.reset(seed=k)[0] is not None and env.data.qpos[:3].copy()
                       for k in range(200)])
    assert np.all(np.abs(starts[:, :2]) <= 0.8)
    assert starts[:, :2].std(axis=0).min() > 0.35  # uniform on [−0.8, 0.8]: std 0.46
    assert starts[:, 2].min() < 0.5 and starts[:, 2].max() > 2 * math.pi - 0.5


def test_test_is_train_ood_differs_and_bad_split_is_rejected() -> None:
    for suite_id in SUITES:
        suite = safemeta.suite(suite_id)
        assert suite.param_ranges("train") == suite.param_ranges("test")
        assert suite.param_ranges("train") != suite.param_ranges("ood")
        with pytest.raises(ValueError, match="split"):
            suite.sample_tasks(1, np.random.default_rng(0), "valid")


@pytest.mark.parametrize("suite_id", SUITES)
def test_reset_and_set_task_never_recompile(suite_id: str) -> None:
    suite = safemeta.suite(suite_id)
    tasks = suite.sample_tasks(3, np.random.default_rng(0), "train")
    tasks += suite.sample_tasks(2, np.random.default_rng(0), "test")
    env = suite.make(tasks[0])
    model = env.model
    before = compile_count()
    for i, task in enumerate(tasks):
        env.set_task(task)
        for _ in range(3):
            env.reset(seed=i)
            env.step(ZERO)
    assert compile_count() == before and env.model is model
    suite.make(tasks[0])
    assert compile_count() == before + 1  # the counter does count compilations


def test_set_task_moves_objects() -> None:
    env = make("car-circle")
    task = CarCircleTask(radius=2.0, wall=1.2, hazards=((2.0, 0.5),))
    env.set_task(task)
    assert env.model.geom("circle").size[0] == 2.0
    assert env.model.geom("wall0").pos[0] == 1.2 and env.model.geom("wall1").pos[0] == -1.2
    np.testing.assert_allclose(env.model.geom("hazard0").pos[:2], (2.0, 0.5))
    assert env.model.geom("hazard1").pos[2] < 0  # unused slot hidden


# -- validation ---------------------------------------------------------------------

@pytest.mark.parametrize(("task", "name"), [
    (CircleTask(radius=-1.0, wall=0.5), "radius"),
    (CircleTask(radius=float("nan"), wall=0.5), "radius"),
    (CircleTask(radius=1.0, wall=1.5), "wall"),
    (CircleTask(radius=1.0, wall=-0.1), "wall"),
    (CarCircleTask(radius=1.0, wall=0.6, hazards=((5.0, 5.0),)), "hazards"),
    (CarCircleTask(radius=1.0, wall=0.6, hazards=((1.0, 0.0),) * 7), "hazards"),
    (ButtonTask(extent=-1.0), "extent"),
    (ButtonTask(extent=1.5, buttons=BUTTONS[:3]), "buttons"),
    (ButtonTask(extent=0.9), "buttons"),  # buttons at (±1, ±1) outside [−0.9, 0.9]²
    (ButtonTask(extent=1.5, hazards=((-1.0, -0.9),)), "hazards"),  # overlaps a button
    (ButtonTask(extent=1.5, gremlins=((0.0, 0.0),) * 7), "gremlins"),
])
def test_impossible_task_parameters_raise(task: Task, name: str) -> None:
    with pytest.raises(ValueError, match=f"^{name}:"):
        task.validate()


def test_more_objects_than_fit_raise() -> None:
    with pytest.raises(ValueError, match="^num_hazards:"):
        ButtonTask.sample(np.random.default_rng(0), 1.0, 8, 6)
    with pytest.raises(ValueError, match="^num_gremlins:"):
        ButtonTask.sample(np.random.default_rng(0), 2.0, 2, 9)
    with pytest.raises(ValueError, match="^radius:"):
        PointCircleSuite().make(CircleTask(radius=0.0, wall=0.5))
    with pytest.raises(TypeError, match="^task:"):
        PointCircleSuite().make(ButtonTask())
    with pytest.raises(ValueError, match="^make:"):
        PointButtonSuite().make(ButtonTask(), robot="car")


# -- gymnasium compatibility, wrappers, time limit, rendering -------------------------

@pytest.mark.parametrize("suite_id", SUITES)
def test_env_checker(suite_id: str) -> None:
    env = make(suite_id)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails, except the checker's notes
        warnings.filterwarnings("ignore", message=".*Box observation space (min|max)imum value")
        warnings.filterwarnings("ignore", message=".*alternative render modes")
        check_env(env.unwrapped)


def test_cost_tuple_wrapper() -> None:
    env = CostTuple(make("car-circle"))
    env.reset(seed=0)
    out = env.step(ZERO)
    assert len(out) == 6
    obs, _, cost, _, _, info = out
    assert cost == info["cost"] and isinstance(cost, float) and obs.shape == (56,)


def test_time_limit_is_the_horizon() -> None:
    env = make("point-circle")
    suite = PointCircleSuite()
    env.reset(seed=0)
    flags = [env.step(ZERO)[3] for _ in range(suite.horizon)]
    assert not any(flags[:-1]) and flags[-1]
    assert PointButtonSuite().horizon == 1000 and CarCircleSuite().horizon == 500


def test_suite_attributes() -> None:
    for suite_id in SUITES:
        suite = safemeta.suite(suite_id)
        assert suite.id == suite_id and suite.family == "continuous"
        assert suite.cost_type == "undiscounted" and suite.cost_limit > 0 and suite.cost_doc


def test_render_and_save_video(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from safemeta.envs.video import save_video

    monkeypatch.chdir(tmp_path)
    env = make("point-button", render_mode="rgb_array")
    env.reset(seed=0)
    try:
        frame = env.render()
    except Exception as exc:  # noqa: BLE001 - no GL backend on this machine
        pytest.skip(f"offscreen rendering unavailable (MUJOCO_GL={os.environ.get('MUJOCO_GL')}): "
                    f"{exc}")
    assert frame.shape == (240, 320, 3) and frame.dtype == np.uint8 and frame.std() > 0
    frames = [frame] + [env.step(ZERO)[0] is not None and env.render() for _ in range(3)]
    save_video(frames, str(tmp_path / "out" / "button.gif"), fps=env.metadata["render_fps"])
    env.close()
    assert (tmp_path / "out" / "button.gif").stat().st_size > 0
    assert sorted(os.listdir(tmp_path)) == ["out"]  # nothing else, e.g. no MUJOCO_LOG.TXT


def test_nothing_written_to_working_directory(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for suite_id in SUITES:
        env = make(suite_id)
        env.reset(seed=0)
        for _ in range(200):
            env.step(env.action_space.sample())
    assert os.listdir(tmp_path) == []
