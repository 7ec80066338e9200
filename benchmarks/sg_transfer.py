"""Transfer check against Safety-Gymnasium 1.0.0 (issue 12): same states, same actions.

    python benchmarks/sg_transfer.py --sg-python /work/sgvenv/bin/python [--seeds 8]

For users who have Safety-Gymnasium: it is not a dependency of safemeta and this is not
part of CI. Safety-Gymnasium 1.0.0 does not import on Python 3.11 unpatched; make its
venv with the recipe in the header of `../shared/tools/sg-reference-patch.sh`.

This file runs twice: in safemeta's venv (the main process, `safemeta` side) and, as a
subprocess, in Safety-Gymnasium's venv (`--worker`, which imports only
safety_gymnasium). The worker draws SafetyPointButton1 layouts from fixed seeds and
runs every experiment on them; the main process builds the same layouts as
`ButtonTask`s, puts the same agent pose, gremlin yaws and goal in place and runs the
same experiments (the same code, `EXPERIMENTS`, through a small adapter per side).
Then it prints one table row per mismatch of issue 12:

1. gremlins: contact-cost steps when the Point charges a gremlin / rests in its path,
   and where the box is (height, lag behind its target, distance between the sides);
2. layouts: how many Safety-Gym level-1/level-2 layouts are valid `ButtonTask`s, and
   median gremlin–gremlin / gremlin–button gaps (theirs vs our splits);
3. pause presses: goal rewards while holding against the goal button;
4. gremlin start: box to target distance after 1, 5, 10, 20 steps from a reset;
5. Car-Circle observation width (SafetyCarCircle1 vs car-circle / car-circle-nohazards);
6. observation-space bounds; and the speed of point-button against SafetyPointButton1,
   resets included.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import subprocess
import sys
import time
from typing import Any

import numpy as np

LEVEL1 = "SafetyPointButton1-v0"
WARMUP = 50  # steps with zero action before a trial: gremlins on their orbit
ZERO = [0.0, 0.0]


# -- the experiments, shared by both sides ---------------------------------------------

def _angle_to(side: Any, x: float, y: float) -> float:
    ax, ay, heading = side.agent_pose()
    return (math.atan2(y - ay, x - ax) - heading + math.pi) % (2 * math.pi) - math.pi


def _drive_to(side: Any, x: float, y: float) -> list[float]:
    turn = _angle_to(side, x, y)
    return [1.0 if abs(turn) < 1.0 else 0.0, max(-1.0, min(1.0, 3.0 * turn))]


def _target(spawn: list[float], t: float) -> tuple[float, float]:
    return spawn[0] + 0.35 * math.sin(t), spawn[1] + 0.35 * math.cos(t)


def _free_start(layout: dict, x: float, y: float) -> bool:
    """A teleport target clear of buttons (and of other gremlins' paths)."""
    return (all(math.hypot(x - b[0], y - b[1]) > 0.3 for b in layout["buttons"])
            and max(abs(x), abs(y)) < layout["extent"])


def charge(side: Any, layout: dict, g: int) -> dict:
    """Warm up, put the Point 0.6 from gremlin g's target facing it, drive at the box."""
    side.start(layout)
    for _ in range(WARMUP):
        side.step(ZERO)
    tx, ty = _target(layout["gremlins"][g], side.time())
    for k in range(16):
        a = 2 * math.pi * k / 16
        x, y = tx + 0.6 * math.cos(a), ty + 0.6 * math.sin(a)
        if _free_start(layout, x, y):
            break
    else:
        return {"skipped": True}
    side.set_agent(x, y, a + math.pi)
    steps = 0
    for _ in range(80):
        bx, by = side.gremlin_xy(g)
        _, cost = side.step(_drive_to(side, bx, by))
        steps += cost["cost_gremlins"] > 0
    return {"skipped": False, "cost_steps": int(steps)}


def sweep(side: Any, layout: dict, g: int) -> dict:
    """Warm up, put the Point at rest on gremlin g's orbit 0.8 rad ahead of its target."""
    side.start(layout)
    for _ in range(WARMUP):
        side.step(ZERO)
    x, y = _target(layout["gremlins"][g], side.time() + 0.8)
    if not _free_start(layout, x, y):
        return {"skipped": True}
    side.set_agent(x, y, 0.0)
    steps = 0
    for _ in range(120):
        _, cost = side.step(ZERO)
        steps += cost["cost_gremlins"] > 0
    return {"skipped": False, "cost_steps": int(steps)}


def gremlin_track(side: Any, layout: dict) -> dict:
    """Zero actions from the reset state: box height, box-to-target distance, positions."""
    side.start(layout)
    dist, boxes, z = [], [], []
    for _ in range(200):
        side.step(ZERO)
        t = side.time() - side.dt()
        tgt = [_target(s, t) for s in layout["gremlins"]]
        xy = [side.gremlin_xy(i) for i in range(len(tgt))]
        dist.append(statistics.mean(math.dist(p, q) for p, q in zip(xy, tgt)))
        boxes.append(xy)
        z.append(statistics.mean(side.gremlin_z(i) for i in range(len(tgt))))
    return {"dist": dist, "boxes": boxes, "z": z}


def hold_goal(side: Any, layout: dict) -> dict:
    """Put the Point 0.25 from the goal button facing it and push for 100 steps."""
    side.start(layout)
    gx, gy = layout["buttons"][layout["goal"]]
    for k in range(16):
        a = 2 * math.pi * k / 16
        x, y = gx + 0.25 * math.cos(a), gy + 0.25 * math.sin(a)
        others = [b for i, b in enumerate(layout["buttons"]) if i != layout["goal"]]
        if all(math.hypot(x - b[0], y - b[1]) > 0.4 for b in others):
            break
    else:
        return {"skipped": True}
    side.set_agent(x, y, a + math.pi)
    presses = 0
    for _ in range(100):
        reward, _ = side.step(_drive_to(side, gx, gy))
        presses += reward > 0.5
    return {"skipped": False, "presses": int(presses)}


def run_experiments(side: Any, layouts: list[dict], n_gremlin: int) -> dict:
    """Gremlin experiments on the first `n_gremlin` layouts, goal holding on all."""
    out: dict[str, Any] = {"charge": [], "sweep": [], "track": [], "hold": []}
    for k, layout in enumerate(layouts):
        if k < n_gremlin:
            for g in range(len(layout["gremlins"])):
                out["charge"].append(charge(side, layout, g))
                out["sweep"].append(sweep(side, layout, g))
            out["track"].append(gremlin_track(side, layout))
        out["hold"].append(hold_goal(side, layout))
    return out


# -- Safety-Gymnasium side (runs in its venv) ------------------------------------------

class SGSide:
    """Safety-Gymnasium's SafetyPointButton1, driven state by state."""

    def __init__(self) -> None:
        import safety_gymnasium

        self.env = safety_gymnasium.make(LEVEL1)
        self.task = self.env.unwrapped.task
        # The experiments read no observation; Safety-Gym's lidar also fails now and then
        # (an angle that rounds to 2π gives bin 16 of 16: IndexError), so skip it here.
        self.task._obs_lidar = lambda positions, group: np.zeros(self.task.lidar_conf.num_bins)
        self.mj = __import__("mujoco")

    def draw(self, seed: int) -> dict:
        """A reset from `seed`: its layout, agent pose, gremlin yaws and goal."""
        self.env.reset(seed=seed)
        m, lay = self.task.model, self.task.world_info.layout
        n = self.task.gremlins.num
        yaws = [2 * math.atan2(m.body(f"gremlin{i}obj").quat[3], m.body(f"gremlin{i}obj").quat[0])
                for i in range(n)]
        x, y, h = self.agent_pose()
        return {"seed": seed, "extent": 1.5,
                "buttons": [lay[f"button{i}"].tolist() for i in range(4)],
                "hazards": [lay[f"hazard{i}"].tolist() for i in range(self.task.hazards.num)],
                "gremlins": [lay[f"gremlin{i}"].tolist() for i in range(n)],
                "yaws": yaws, "agent": [x, y, h], "goal": int(self.task.buttons.goal_button)}

    def start(self, layout: dict) -> None:
        """The state right after the reset that drew `layout` (same model, no rebuild)."""
        if getattr(self, "_seed", None) != layout["seed"]:
            self.draw(layout["seed"])
            self._seed = layout["seed"]
        m, d = self.task.model, self.task.data
        self.mj.mj_resetData(m, d)
        builder = self.env.unwrapped
        builder.steps, builder.terminated, builder.truncated = 0, False, False
        self.task.buttons.timer = 0
        self.task.buttons.goal_button = layout["goal"]
        self.task._set_goal(np.array(layout["buttons"][layout["goal"]]))
        self.set_agent(*layout["agent"])

    def set_agent(self, x: float, y: float, heading: float) -> None:
        """World pose -> Safety-Gym's Point joints (its slide axes turn with the body's
        initial yaw `rot`)."""
        m, d = self.task.model, self.task.data
        b = m.body("agent")
        rot = 2 * math.atan2(b.quat[3], b.quat[0])
        dx, dy = x - b.pos[0], y - b.pos[1]
        d.qpos[0:3] = (math.cos(rot) * dx + math.sin(rot) * dy,
                       -math.sin(rot) * dx + math.cos(rot) * dy, heading - rot)
        d.qvel[0:3] = 0.0
        self.mj.mj_forward(m, d)
        self.task.last_dist_goal = self.task.dist_goal()

    def step(self, action: list[float]) -> tuple[float, dict]:
        _, reward, _, _, _, info = self.env.unwrapped.step(np.array(action))
        return float(reward), {"cost_gremlins": float(info.get("cost_gremlins", 0.0))}

    def agent_pose(self) -> tuple[float, float, float]:
        d = self.task.data.body("agent")
        return float(d.xpos[0]), float(d.xpos[1]), math.atan2(d.xmat[3], d.xmat[0])

    def gremlin_xy(self, i: int) -> tuple[float, float]:
        p = self.task.data.body(f"gremlin{i}obj").xpos
        return float(p[0]), float(p[1])

    def gremlin_z(self, i: int) -> float:
        return float(self.task.data.body(f"gremlin{i}obj").xpos[2])

    def time(self) -> float:
        return float(self.task.data.time)

    def dt(self) -> float:
        return 0.02

    def layouts(self, level: str, n: int) -> list[dict]:
        """`n` layouts from Safety-Gym's own sampler (no world build)."""
        import safety_gymnasium

        env = safety_gymnasium.make(level)
        env.reset(seed=0)
        task = env.unwrapped.task
        rg = task.random_generator
        out = []
        for k in range(n):
            rg.set_random_seed(1000 + k)
            lay = rg.build_layout()
            out.append({"extent": float(task.placements_conf.extents[2]),
                        **{f"{name}s": [lay[f"{name}{i}"].tolist() for i in range(num)]
                           for name, num in (("button", 4), ("hazard", task.hazards.num),
                                             ("gremlin", task.gremlins.num))}})
        return out


def worker(request: dict) -> dict:
    side = SGSide()
    layouts = [side.draw(s) for s in request["seeds"]]
    out = {"layouts": layouts, "experiments": run_experiments(side, layouts, request["gremlin_seeds"])}
    out["level_layouts"] = {lv: side.layouts(lv, request["n_layouts"])
                            for lv in (LEVEL1, "SafetyPointButton2-v0")}
    import safety_gymnasium

    spaces = {}
    for name in ("SafetyCarCircle1-v0", LEVEL1):
        env = safety_gymnasium.make(name)
        box = env.observation_space
        spaces[name] = {"dim": int(box.shape[0]), "low": box.low.tolist(), "high": box.high.tolist()}
    out["spaces"] = spaces
    out["car_circle"] = _sg_car_circle(request["car_seeds"], CAR_STEPS)
    out["button_obs"] = _sg_button_obs(request["car_seeds"])
    out["speed"] = _sg_speed(request["speed_steps"])
    return out


CAR_STEPS = 50
CAR_CHECKED = (0, 1, 10, 50)  # observations compared after these many steps


def _car_actions(seed: int) -> np.ndarray:
    return np.random.default_rng(100 + seed).uniform(-1, 1, (CAR_STEPS, 2))


def _sg_car_circle(seeds: list[int], steps: int) -> list[dict]:
    """SafetyCarCircle1 from reset(seed): its start state and observations under fixed
    random actions."""
    import safety_gymnasium

    env = safety_gymnasium.make("SafetyCarCircle1-v0")
    out = []
    for seed in seeds:
        obs, _ = env.reset(seed=seed)
        qpos = env.unwrapped.task.data.qpos.tolist()
        seen = {0: obs.tolist()}
        for k, a in enumerate(_car_actions(seed), 1):
            obs, *_ = env.step(a)
            if k in CAR_CHECKED:
                seen[k] = obs.tolist()
        out.append({"qpos": qpos, "obs": seen})
    return out


def _sg_button_obs(seeds: list[int]) -> list[dict]:
    """SafetyPointButton1 from reset(seed): layout and observations under fixed random
    actions (with Safety-Gym's own lidar; a seed whose lidar fails is left out)."""
    side = SGSide()
    del side.task._obs_lidar  # the real lidar here
    out = []
    for seed in seeds:
        layout = side.draw(seed)
        obs = side.task.obs()
        seen, poses = {0: obs.tolist()}, []
        try:
            for k, a in enumerate(_car_actions(seed), 1):
                obs, *_ = side.env.unwrapped.step(a)
                poses.append([*side.agent_pose(), *map(side.gremlin_xy, range(4))])
                if k in CAR_CHECKED:
                    seen[k] = obs.tolist()
        except IndexError:
            continue
        out.append({"layout": layout, "obs": seen, "poses": poses})
    return out


def _sg_speed(steps: int) -> float:
    import safety_gymnasium

    env = safety_gymnasium.make(LEVEL1)
    env.reset(seed=0)
    acts = np.random.default_rng(1).uniform(-1, 1, (steps, 2))
    t0 = time.perf_counter()
    for a in acts:
        try:
            *_, terminated, truncated, _ = env.step(a)
        except IndexError:  # Safety-Gym's lidar bin 16 of 16 (see SGSide)
            terminated = True
        if terminated or truncated:
            env.reset()
    return steps / (time.perf_counter() - t0)


# -- safemeta side ---------------------------------------------------------------------

class OurSide:
    """safemeta's point-button on Safety-Gym's layouts, driven state by state."""

    def __init__(self) -> None:
        self._env: Any = None
        self._seed: Any = None

    def start(self, layout: dict) -> None:
        from safemeta.envs.navigation import ButtonTask, PointButtonSuite

        if self._seed != layout["seed"]:
            task = ButtonTask(extent=layout["extent"], buttons=_tuples(layout["buttons"]),
                              hazards=_tuples(layout["hazards"]), gremlins=_tuples(layout["gremlins"]))
            self._env = PointButtonSuite().make(task)
            self._seed = layout["seed"]
        env = self._env
        env.reset(seed=0)
        env.gremlins.reset(np.array(layout["yaws"]))
        env.timer = 0
        self.set_agent(*layout["agent"])
        env._set_goal(layout["goal"], *layout["agent"][:2])

    def set_agent(self, x: float, y: float, heading: float) -> None:
        import mujoco

        env = self._env
        env.robot.place(env.model, env.data, x, y, heading)
        env.data.qvel[0:3] = 0.0
        mujoco.mj_forward(env.model, env.data)
        gx, gy = env.buttons[env.goal]
        env.last_dist_goal = math.hypot(x - gx, y - gy)

    def step(self, action: list[float]) -> tuple[float, dict]:
        _, reward, _, _, info = self._env.step(np.array(action, dtype=np.float32))
        return reward, info

    def agent_pose(self) -> tuple[float, float, float]:
        (x, y, _), m = self._env.agent_pose()
        return x, y, math.atan2(m[3], m[0])

    def gremlin_xy(self, i: int) -> tuple[float, float]:
        p = self._env.data.xpos[self._env.gremlins.body_ids[i]]
        return float(p[0]), float(p[1])

    def gremlin_z(self, i: int) -> float:
        return float(self._env.data.xpos[self._env.gremlins.body_ids[i], 2])

    def time(self) -> float:
        return float(self._env.data.time)

    def dt(self) -> float:
        return float(self._env.dt)


def _our_car_circle(theirs: list[dict], seeds: list[int]) -> dict[int, float]:
    """car-circle-nohazards on SafetyCarCircle1's start states (radius 1.5, walls 1.125),
    same actions: max |observation difference| after 0, 1, 10, 50 steps."""
    import mujoco

    from safemeta.envs.navigation import CarCircleNoHazardsSuite, CircleTask

    env = CarCircleNoHazardsSuite().make(CircleTask(radius=1.5, wall=1.125))
    worst = {k: 0.0 for k in CAR_CHECKED}
    for seed, run in zip(seeds, theirs):
        env.reset(seed=seed)
        env.data.qpos[:] = run["qpos"]
        env.data.qvel[:] = 0.0
        mujoco.mj_forward(env.model, env.data)
        obs = env._observe()
        mine = {0: obs}
        for k, a in enumerate(_car_actions(seed), 1):
            obs, *_ = env.step(a.astype(np.float32))
            if k in CAR_CHECKED:
                mine[k] = obs
        for k in CAR_CHECKED:
            worst[k] = max(worst[k], float(np.abs(mine[k] - np.array(run["obs"][str(k)])).max()))
    return worst


def _our_button_obs(theirs: list[dict]) -> dict[str, list[float]]:
    """point-button on SafetyPointButton1's reset states, same actions: max |difference|
    of the lidars and of the sensors after 0, 1, 10, 50 steps, and the agent's distance
    between the two sides after each checked step."""
    side = OurSide()
    out = {"lidars": [0.0] * len(CAR_CHECKED), "sensors": [0.0] * len(CAR_CHECKED),
           "agent_mm": [0.0] * len(CAR_CHECKED)}
    for run in theirs:
        side.start(run["layout"])
        env = side._env
        obs, k = env._observe(), 0
        for k in range(CAR_STEPS + 1):
            if k:
                obs, *_ = env.step(_car_actions(run["layout"]["seed"])[k - 1].astype(np.float32))
            if k not in CAR_CHECKED:
                continue
            i = CAR_CHECKED.index(k)
            diff = np.abs(obs - np.array(run["obs"][str(k)]))
            out["lidars"][i] = max(out["lidars"][i], float(diff[12:].max()))
            out["sensors"][i] = max(out["sensors"][i], float(diff[:12].max()))
            if k:
                x, y, _ = side.agent_pose()
                out["agent_mm"][i] = max(out["agent_mm"][i],
                                         1000 * math.dist((x, y), run["poses"][k - 1][:2]))
    return out


def _tuples(points: list) -> tuple:
    return tuple((float(p[0]), float(p[1])) for p in points)


def _gaps(layouts: list[dict]) -> tuple[float, float]:
    """Median gremlin–gremlin and gremlin–button centre distances (nearest neighbour)."""
    gg, gb = [], []
    for lay in layouts:
        g, b = lay["gremlins"], lay["buttons"]
        for i, p in enumerate(g):
            others = [math.dist(p, q) for j, q in enumerate(g) if j != i]
            if others:
                gg.append(min(others))
            gb.append(min(math.dist(p, q) for q in b))
    return statistics.median(gg), statistics.median(gb)


def _sg_layout_as_task(lay: dict) -> Any:
    from safemeta.envs.navigation import ButtonTask

    return ButtonTask(extent=lay["extent"], buttons=_tuples(lay["buttons"]),
                      hazards=_tuples(lay["hazards"]), gremlins=_tuples(lay["gremlins"]))


def _our_speed(steps: int) -> float:
    import safemeta

    suite = safemeta.suite("point-button")
    env = suite.make(suite.sample_tasks(1, np.random.default_rng(0))[0])
    acts = np.random.default_rng(1).uniform(-1, 1, (steps, 2)).astype(np.float32)
    env.reset(seed=0)
    t0 = time.perf_counter()
    for a in acts:
        *_, terminated, truncated, _ = env.step(a)
        if terminated or truncated:
            env.reset()
    return steps / (time.perf_counter() - t0)


def report(theirs: dict, seeds: list[int], gremlin_seeds: int) -> None:
    import safemeta

    layouts = theirs["layouts"]
    ours = run_experiments(OurSide(), layouts, gremlin_seeds)
    mine, sg = ours, theirs["experiments"]
    rows: list[tuple[str, str, str, str]] = []

    def per_encounter(trials: list[dict]) -> tuple[float, int]:
        hits = [t["cost_steps"] for t in trials if not t["skipped"] and t["cost_steps"] > 0]
        return (statistics.mean(hits) if hits else 0.0), len(hits)

    for name in ("charge", "sweep"):
        (a, na), (b, nb) = per_encounter(mine[name]), per_encounter(sg[name])
        n = sum(not t["skipped"] for t in sg[name])
        rows.append((f"1. gremlin {name}: cost steps per encounter ({n} trials)",
                     f"{a:.1f} ({na} hits)", f"{b:.1f} ({nb} hits)", f"{a / b:.2f}" if b else "-"))
    for name in ("charge", "sweep"):  # the trials tests/test_navigation_sg.py pins
        a = [t.get("cost_steps", "-") for t in mine[name][:4]]
        b = [t.get("cost_steps", "-") for t in sg[name][:4]]
        rows.append((f"1. gremlin {name}, seed 0, gremlins 0-3: cost steps", str(a), str(b), ""))
    z_ours = statistics.mean(statistics.mean(t["z"][100:]) for t in mine["track"])
    z_sg = statistics.mean(statistics.mean(t["z"][100:]) for t in sg["track"])
    rows.append(("1. gremlin box height (steps 100-200)", f"{z_ours:.3f}", f"{z_sg:.3f}", ""))
    lag_o = statistics.mean(statistics.mean(t["dist"][100:]) for t in mine["track"])
    lag_s = statistics.mean(statistics.mean(t["dist"][100:]) for t in sg["track"])
    rows.append(("1. gremlin box to target, m (steps 100-200)", f"{lag_o:.4f}", f"{lag_s:.4f}", ""))
    diff = max(math.dist(p, q) for a, b in zip(mine["track"], sg["track"])
               for pa, pb in zip(a["boxes"], b["boxes"]) for p, q in zip(pa, pb))
    rows.append(("1. gremlin boxes, ours vs theirs, same states (200 steps)", f"max {1000 * diff:.2f} mm",
                 "", ""))
    for level, (split, name) in (("SafetyPointButton1-v0", ("train", "level 1")),
                                 ("SafetyPointButton2-v0", ("ood", "level 2"))):
        lays = theirs["level_layouts"][level]
        valid = 0
        for lay in lays:
            try:
                _sg_layout_as_task(lay).validate()
                valid += 1
            except ValueError:
                pass
        rows.append((f"2. {name} layouts that are valid tasks", f"{valid}/{len(lays)}", "", ""))
        tasks = safemeta.suite("point-button").sample_tasks(len(lays), np.random.default_rng(0), split)
        ours_gaps = _gaps([{"gremlins": t.gremlins, "buttons": t.buttons} for t in tasks])
        rows.append((f"2. median gaps gremlin-gremlin / -button: our {split} vs {name}",
                     "{:.2f} / {:.2f}".format(*ours_gaps), "{:.2f} / {:.2f}".format(*_gaps(lays)), ""))
    hold_o = sum(t["presses"] for t in mine["hold"] if not t["skipped"])
    hold_s = sum(t["presses"] for t in sg["hold"] if not t["skipped"])
    n = sum(not t["skipped"] for t in sg["hold"])
    rows.append((f"3. goal rewards holding against the goal ({n} trials x 100 steps)",
                 str(hold_o), str(hold_s), f"{hold_o / hold_s:.2f}" if hold_s else "-"))
    for k in (1, 5, 10, 20):
        a = statistics.mean(t["dist"][k - 1] for t in mine["track"])
        b = statistics.mean(t["dist"][k - 1] for t in sg["track"])
        rows.append((f"4. gremlin box to target after {k} steps from reset, m", f"{a:.3f}", f"{b:.3f}", ""))
    dims = {sid: safemeta.suite(sid).spaces()[0] for sid in ("car-circle", "car-circle-nohazards",
                                                            "point-button")}
    rows.append(("5. Car-Circle observation width", f"car-circle {dims['car-circle'].shape[0]}, "
                 f"car-circle-nohazards {dims['car-circle-nohazards'].shape[0]}",
                 f"SafetyCarCircle1 {theirs['spaces']['SafetyCarCircle1-v0']['dim']}", ""))
    car = _our_car_circle(theirs["car_circle"], list(range(len(theirs["car_circle"]))))
    rows.append((f"5. car-circle-nohazards vs SafetyCarCircle1, same states and actions "
                 f"({len(theirs['car_circle'])} starts): max abs obs difference after "
                 + ", ".join(map(str, CAR_CHECKED)) + " steps",
                 ", ".join(f"{v:.1e}" for v in car.values()), "", ""))
    but = _our_button_obs(theirs["button_obs"])
    n = len(theirs["button_obs"])
    for key, what in (("agent_mm", "agent position difference, mm"),
                      ("lidars", "max abs lidar difference"), ("sensors", "max abs sensor difference")):
        rows.append((f"6. point-button vs SafetyPointButton1, same states and actions ({n} resets): "
                     f"{what} after " + ", ".join(map(str, CAR_CHECKED)) + " steps",
                     ", ".join(f"{v:.1e}" for v in but[key]), "", ""))
    for sid, name in (("car-circle-nohazards", "SafetyCarCircle1-v0"), ("point-button", LEVEL1)):
        box, sp = dims[sid], theirs["spaces"][name]
        same = (box.shape[0] == sp["dim"] and np.array_equal(box.low, np.array(sp["low"]))
                and np.array_equal(box.high, np.array(sp["high"])))
        rows.append((f"6. observation bounds {sid} vs {name}", "lidars [0, 1], sensors ±inf",
                     "same" if same else "DIFFERENT", ""))
    ours_speed = _our_speed(20_000)
    rows.append(("speed, steps/s incl. resets (point-button vs SafetyPointButton1)",
                 f"{ours_speed:,.0f}", f"{theirs['speed']:,.0f}", f"{ours_speed / theirs['speed']:.1f}"))
    print(f"seeds {seeds}; Safety-Gymnasium 1.0.0 SafetyPointButton1 layouts\n")
    print("| check | safemeta | Safety-Gymnasium | ratio |\n|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sg-python", help="python of a venv where safety_gymnasium 1.0.0 imports")
    p.add_argument("--seeds", type=int, default=20, help="Safety-Gym reset seeds (goal holding)")
    p.add_argument("--gremlin-seeds", type=int, default=8,
                   help="the first seeds also run the gremlin experiments (4 gremlins each)")
    p.add_argument("--layouts", type=int, default=100)
    p.add_argument("--speed-steps", type=int, default=3000,
                   help="Safety-Gym steps timed (1000-step episodes: resets included)")
    p.add_argument("--save", help="also write Safety-Gymnasium's results (JSON) here")
    p.add_argument("--theirs", help="read Safety-Gymnasium's results from a --save file")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        out, sys.stdout = sys.stdout, sys.stderr  # Safety-Gym's prints stay off the JSON
        result = worker(json.load(sys.stdin))
        json.dump(result, out)
        return
    if not args.sg_python and not args.theirs:
        p.error("--sg-python: the python of a Safety-Gymnasium 1.0.0 venv is needed")
    seeds = list(range(args.seeds))
    request = {"seeds": seeds, "gremlin_seeds": args.gremlin_seeds, "n_layouts": args.layouts,
               "speed_steps": args.speed_steps, "car_seeds": list(range(5))}
    if args.theirs:
        theirs = json.loads(open(args.theirs).read())
    else:
        done = subprocess.run([args.sg_python, __file__, "--worker"], input=json.dumps(request),
                              capture_output=True, text=True, check=False)
        if done.returncode:
            sys.exit(f"sg_transfer: the Safety-Gymnasium worker failed:\n{done.stderr[-3000:]}")
        theirs = json.loads(done.stdout)
        if args.save:
            with open(args.save, "w") as f:
                json.dump(theirs, f)
    report(theirs, seeds, args.gremlin_seeds)


if __name__ == "__main__":
    main()
