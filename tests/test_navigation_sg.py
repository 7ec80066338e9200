"""Point-Button against Safety-Gymnasium 1.0.0 (issue 12): gremlins, layouts, pause presses,
observation bounds, Car-Circle without hazards.

Safety-Gymnasium is not installed here: its numbers are written into the tests, measured
with `benchmarks/sg_transfer.py` on the same states and actions (the gremlin trials below
are that script's trials, run on our side through its `OurSide` adapter).
"""

from __future__ import annotations

import importlib.util
import math
import statistics
from pathlib import Path

import mujoco
import numpy as np
import pytest

import safemeta
from safemeta.envs.navigation import ButtonTask, PointButtonSuite
from safemeta.envs.navigation.button import KEEPOUT

ZERO = np.zeros(2, dtype=np.float32)

# SafetyPointButton1-v0, reset(seed=0): layout, gremlin yaws, agent pose (x, y, heading), goal.
SG_LEVEL1_SEED0 = {
    "seed": 0, "extent": 1.5,
    "buttons": [[-0.3519683298223051, 0.30316846291167066], [-0.6717613284341785, -0.11217514382967164],
                [-1.0523529618577623, 0.036677921421591986], [-0.31143525732329325, -1.0340806065448231]],
    "hazards": [[0.04140076647591173, 0.17916815149951804], [0.18617904704583776, -1.2404208762682414],
                [0.36950698027429585, 1.029340931325583], [-0.8125606908498777, -0.5375529623125875]],
    "gremlins": [[-1.097581725824089, 0.6525460644177123], [0.005126184740387396, -0.4506349605382822],
                 [0.823733592845125, -0.9650154157607344], [-0.35646520988016017, 1.0004006019275393]],
    "yaws": [4.4255604869974965, 3.6096382055516747, 2.6060923661713775, 5.62018990821994],
    "agent": [0.6673291101784873, 0.02182830734504937, -2.7329596223507457], "goal": 2,
}
# SafetyPointButton2-v0's sampler (random_generator.build_layout, seed 1000), extent 1.8.
SG_LEVEL2 = ButtonTask(
    extent=1.8,
    buttons=((0.904699935394254, 0.5368442795773021), (0.8786320600048749, -0.8591046430248174),
             (-0.6701528765844174, -0.49773174708244605), (-1.470482124729933, 0.9079762570259713)),
    hazards=((-0.9874766902645659, -1.318325577568714), (1.4215783338978651, 0.8347815865229933),
             (-0.23037847645272524, 0.2188379823342832), (0.9890985637360639, 1.3938387366257579),
             (-1.594651239169261, 0.16184870727113188), (-0.23132726786269853, -0.7513927960479705),
             (-1.3130042728744797, 1.397673830700823), (1.1670281080821598, -1.3424038902871922)),
    gremlins=((0.022840840920793637, -1.356538432405574), (-0.5123216638753072, 0.9651265292407185),
              (0.27459186002512337, 1.3792022232234573), (-1.0098840744247508, -0.0018142142322752353),
              (1.354663918912649, 0.04282889728193817), (0.3309058807672165, -0.5388241883236697)))


def _transfer_module():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "sg_transfer.py"
    spec = importlib.util.spec_from_file_location("sg_transfer", path)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def level1_task() -> ButtonTask:
    lay = SG_LEVEL1_SEED0
    return ButtonTask(extent=1.5, buttons=tuple(map(tuple, lay["buttons"])),
                      hazards=tuple(map(tuple, lay["hazards"])),
                      gremlins=tuple(map(tuple, lay["gremlins"])))


# -- 1. gremlins -----------------------------------------------------------------------

# Gremlin-cost steps per trial, gremlins 0-3 of the seed-0 layout; Safety-Gymnasium's on the
# same trials: charge [54, 51, 44, 53], sweep [85, 35, 88, 75]. (The kinematic box of
# before this issue gave ~4 steps per charge: a Point bounced off it.)
SG_CHARGE, SG_SWEEP = [54, 51, 44, 53], [85, 35, 88, 75]


@pytest.mark.parametrize(("trial", "ours", "theirs"), [("charge", [54, 52, 44, 53], SG_CHARGE),
                                                      ("sweep", [72, 52, 78, 55], SG_SWEEP)])
def test_gremlin_contact_counts_match_safety_gymnasium(trial: str, ours: list[int],
                                                       theirs: list[int]) -> None:
    sgt = _transfer_module()
    side = sgt.OurSide()
    run = getattr(sgt, trial)
    got = [run(side, SG_LEVEL1_SEED0, g)["cost_steps"] for g in range(4)]
    assert got == ours
    assert abs(sum(got) - sum(theirs)) <= 0.25 * sum(theirs)  # the target: within 25%


def gremlin_env(yaw: float = 0.0) -> tuple:
    task = ButtonTask(extent=1.5, buttons=((-1.0, -1.0), (-1.0, 1.0), (1.0, -1.0), (1.0, 1.0)),
                      gremlins=((0.0, 0.0),))
    env = PointButtonSuite().make(task)
    env.reset(seed=0)
    env.robot.place(env.model, env.data, 0.8, 0.0, 0.0)
    env.gremlins.reset(np.array([yaw]))
    mujoco.mj_forward(env.model, env.data)
    return env, env.data.body("gremlin0")


def test_gremlin_starts_at_spawn_and_reaches_its_orbit() -> None:
    env, box = gremlin_env(yaw=0.7)
    np.testing.assert_allclose(box.xpos, (0.0, 0.0, 0.1), atol=1e-12)  # on the floor, at spawn
    assert 2 * math.atan2(box.xquat[3], box.xquat[0]) == pytest.approx(0.7)
    assert env.model.body_mass[env.gremlins.body_ids[0]] == pytest.approx(8e-6)
    dist = []
    for _ in range(100):
        env.step(ZERO)
        t = env.data.time - env.dt
        dist.append(math.dist(box.xpos[:2], (0.35 * math.sin(t), 0.35 * math.cos(t))))
    # Safety-Gym (sg_transfer, 32 boxes): 0.302, 0.114, 0.037, 0.024 m after 1, 5, 10, 20 steps.
    assert [round(dist[k - 1], 3) for k in (1, 5, 10, 20)] == [0.302, 0.114, 0.037, 0.024]
    assert box.xpos[2] == pytest.approx(0.1996, abs=1e-4)  # hangs 0.4 mm below its 0.2 target
    assert dist[-1] == pytest.approx(0.0244, abs=2e-4)  # trails its target by 2.4 cm
    assert 2 * math.atan2(box.xquat[3], box.xquat[0]) == pytest.approx(0.7, abs=1e-3)  # yaw kept


def test_gremlin_pushes_a_resting_point_and_costs_while_touching() -> None:
    env, box = gremlin_env()
    env.robot.place(env.model, env.data, 0.0, 0.35 + 0.3, 0.0)  # far from the box at first
    for _ in range(60):
        env.step(ZERO)
    t = env.data.time
    ahead = 0.35 * math.sin(t + 0.6), 0.35 * math.cos(t + 0.6)  # on the orbit, 0.6 rad ahead
    env.robot.place(env.model, env.data, *ahead, 0.0)
    env.data.qvel[:3] = 0.0
    mujoco.mj_forward(env.model, env.data)
    costs = [env.step(ZERO)[4]["cost_gremlins"] for _ in range(100)]
    steps = sum(c > 0 for c in costs)
    assert steps == 65 and costs.index(next(c for c in costs if c > 0)) == 5
    moved = math.dist(env.data.qpos[:2], ahead)
    assert moved > 0.15  # the box shoved the Point along


def test_unused_gremlin_slots_are_parked_without_constraints() -> None:
    env, _ = gremlin_env()
    assert list(env.data.eq_active) == [1, 0, 0, 0, 0, 0]
    env.set_task(level1_task())
    env.reset(seed=1)
    assert list(env.data.eq_active) == [1, 1, 1, 1, 0, 0]
    for _ in range(50):
        env.step(ZERO)
    parked = env.data.xpos[env.gremlins.body_ids[4:]]
    np.testing.assert_allclose(parked, [[104.0, 100.0, 0.2], [105.0, 100.0, 0.2]], atol=1e-9)


# -- 2. layouts ------------------------------------------------------------------------

def test_safety_gymnasium_level1_and_level2_layouts_are_valid_tasks() -> None:
    level1_task().validate()
    SG_LEVEL2.validate()
    env = PointButtonSuite().make(SG_LEVEL2)
    for seed in range(20):  # every reset finds an agent start within Safety-Gym's rules
        env.reset(seed=seed)
        x, y = env.data.qpos[:2]
        assert max(abs(x), abs(y)) <= 1.8 - 0.4
        for name, p in env._objects:
            assert math.dist((x, y), p) >= 0.4 + KEEPOUT[name]


@pytest.mark.parametrize(("task", "name"), [
    (ButtonTask(extent=1.5, gremlins=((1.2, 0.0),)), "gremlins"),  # outside [−1.1, 1.1]²
    (ButtonTask(extent=1.5, hazards=((0.0, 1.35),)), "hazards"),  # outside [−1.32, 1.32]²
    (ButtonTask(extent=1.5, gremlins=((0.0, 0.0), (0.79, 0.0))), "gremlins"),  # < 0.4 + 0.4
    (ButtonTask(extent=0.4), "extent"),
    (ButtonTask(extent=1.5, pause_presses=1), "pause_presses"),  # type: ignore[arg-type]
    (ButtonTask(extent=1.2, buttons=((0.85, 0.0), (-0.85, 0.0), (0.0, 0.85), (0.0, -0.85)),
                gremlins=((0.0, 0.0),), hazards=((0.6, 0.6), (-0.6, 0.6), (0.6, -0.6),
                                                 (-0.6, -0.6))), "extent"),  # no agent start
])
def test_layout_rules_of_safety_gymnasium_raise_one_line(task: ButtonTask, name: str) -> None:
    with pytest.raises(ValueError, match=f"^{name}:") as e:
        task.validate()
    assert "\n" not in str(e.value)


def gaps(tasks: list[ButtonTask]) -> tuple[float, float]:
    gg, gb = [], []
    for t in tasks:
        for i, p in enumerate(t.gremlins):
            gg.append(min(math.dist(p, q) for j, q in enumerate(t.gremlins) if j != i))
            gb.append(min(math.dist(p, q) for q in t.buttons))
    return statistics.median(gg), statistics.median(gb)


def test_sampled_level1_layouts_space_objects_as_safety_gymnasium() -> None:
    rng = np.random.default_rng(0)
    tasks = [ButtonTask.sample(rng, 1.5, 4, 4) for _ in range(100)]
    gg, gb = gaps(tasks)
    # Nearest-neighbour medians of Safety-Gym's level-1 sampler, 100 layouts (sg_transfer):
    # gremlin–gremlin 1.00 m, gremlin–button 0.71 m.
    assert gg == pytest.approx(1.00, abs=0.05) and gb == pytest.approx(0.71, abs=0.05)
    assert (round(gg, 3), round(gb, 3)) == (0.998, 0.73)


# -- 3. pause presses ------------------------------------------------------------------

def pressed_env(pause_presses: bool):
    task = ButtonTask(extent=1.5, pause_presses=pause_presses)
    env = PointButtonSuite().make(task)
    env.reset(seed=0)
    env._set_goal(3, 0.0, 0.0)  # goal: the button at (1, 1)
    env.robot.place(env.model, env.data, 1.0 - 0.199, 1.0, 0.0)  # touching it, facing it
    mujoco.mj_forward(env.model, env.data)
    env.last_dist_goal = 0.199
    env.timer = 5  # in the pause after a press
    return env


def test_pause_press_pays_as_safety_gymnasium() -> None:
    env = pressed_env(pause_presses=True)
    _, reward, _, _, info = env.step(np.array([1.0, 0.0], np.float32))
    dist = math.dist(env.data.qpos[:2], (1.0, 1.0))
    assert info["goal_pressed"] and env.timer == 10
    assert reward == pytest.approx(1.0 + 0.199 - dist, abs=1e-12)
    assert reward == pytest.approx(0.9847000, abs=1e-6)  # pushed back 1.5 cm by the contact
    assert info["cost_buttons"] == 0.0  # the pause: no wrong-button cost either


def test_pause_press_ignored_when_the_flag_is_off() -> None:
    env = pressed_env(pause_presses=False)
    _, reward, _, _, info = env.step(np.array([1.0, 0.0], np.float32))
    assert not info["goal_pressed"] and env.timer == 4 and env.goal == 3
    assert reward == pytest.approx(0.199 - math.dist(env.data.qpos[:2], (1.0, 1.0)), abs=1e-12)
    assert reward == pytest.approx(-0.0153000, abs=1e-6)


def test_next_goal_is_any_button_as_safety_gymnasium() -> None:
    env = pressed_env(pause_presses=True)
    same = 0
    for _ in range(400):
        before = env.goal
        env._new_goal()
        same += env.goal == before
    assert same == 88  # 1/4 of 400 = 100 ± 8.7
    env = pressed_env(pause_presses=False)
    goals = []
    for _ in range(400):
        before = env.goal
        env._new_goal()
        goals.append(env.goal)
        assert env.goal != before


# -- 5, 6. Car-Circle without hazards, observation bounds ------------------------------

NAV = ["point-circle", "car-circle", "car-circle-nohazards", "point-button"]


@pytest.mark.parametrize(("suite_id", "sensors", "lidars"), [
    ("point-circle", 12, 1), ("car-circle", 24, 2), ("car-circle-nohazards", 24, 1),
    ("point-button", 12, 4)])
def test_observation_bounds_are_safety_gymnasiums(suite_id: str, sensors: int, lidars: int) -> None:
    suite = safemeta.suite(suite_id)
    space = suite.spaces()[0]
    assert space.shape == (sensors + 16 * lidars,)
    assert np.all(space.low[:sensors] == -np.inf) and np.all(space.high[:sensors] == np.inf)
    assert np.all(space.low[sensors:] == 0.0) and np.all(space.high[sensors:] == 1.0)


@pytest.mark.parametrize("suite_id", NAV)
def test_bounds_contain_every_observation_of_a_random_rollout(suite_id: str) -> None:
    suite = safemeta.suite(suite_id)
    env = suite.make(suite.sample_tasks(1, np.random.default_rng(2), "test")[0])
    obs, _ = env.reset(seed=2)
    env.action_space.seed(2)
    seen = [obs]
    for _ in range(400):
        obs, *_ = env.step(env.action_space.sample())
        seen.append(obs)
    seen_arr = np.array(seen)
    assert all(env.observation_space.contains(o) for o in seen)
    assert seen_arr[:, -16 * (1 if "circle" in suite_id else 4):].max() > 0.5  # lidars do read


def test_car_circle_nohazards_is_safetycarcircle1_wide() -> None:
    suite = safemeta.suite("car-circle-nohazards")
    task = suite.sample_tasks(1, np.random.default_rng(0))[0]
    assert type(task).__name__ == "CircleTask"
    env = suite.make(task)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (40,) and env.robot.name == "car"
    assert "56" in safemeta.suite("car-circle").description
    assert "40" in suite.description
