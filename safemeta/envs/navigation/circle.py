"""Point-Circle and Car-Circle (SPEC §4.2; Meta-CPO task lineage).

Reward (Safety-Gymnasium Circle): 0.1 · ((−u·y + v·x) / r) / (1 + |r − R|) for the
agent's world position (x, y), world velocity (u, v) and r = |(x, y)|: run
counter-clockwise along the circle of radius R. Cost: 1 per step while |x| > wall
(two walls at x = ±wall); Car-Circle adds hazards (radius 0.12) whose cost is the
depth inside them. The per-step cost is the 0/1 indicator "any cost > 0"; the
components are in info["cost_walls"] and info["cost_hazards"].

Observation: sensors, then the 16-bin lidar toward the circle's centre (max_dist 6),
then (Car-Circle) the 16-bin hazards lidar, also max_dist 6 (Safety-Gymnasium has one
lidar setting per task): Point-Circle 12 + 16 = 28, Car-Circle with hazards (the
paper's task, `car-circle`) 24 + 16 + 16 = 56, Car-Circle without hazards
(`car-circle-nohazards`, Safety-Gymnasium's SafetyCarCircle1) 24 + 16 = 40.

Splits (`RANGES`): `train` and `test` draw R ∈ [1, 1.5], wall/R ∈ [0.55, 0.75], 2–3
hazards; `ood` draws larger circles, R ∈ [2, 2.5], with walls at [0.55, 0.65]·R and 3–5
hazards: outside the training distribution, harder.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from safemeta.envs.base import SPLITS, ParamRange, Suite, Task
from safemeta.envs.navigation import lidar
from safemeta.envs.navigation.engine import NavEnv, check_no_kwargs
from safemeta.envs.navigation.robots import CAR, POINT, Robot, build_xml
from safemeta.nn.scripted import KnownSafe, ScriptedPolicy

HORIZON = 500
LIDAR_MAX_DIST = 6.0
START_HALF = 0.8  # agent starts uniform in [−0.8, 0.8]², random heading
HAZARD_SIZE = 0.12
MAX_HAZARDS = 6
MAX_RADIUS = 4.0  # the lidar toward the centre (max_dist 6) still sees the whole track
AGENT_KEEPOUT = 0.25  # start at least this far from a hazard's edge

# Task distributions (SPEC §4.2): radius R, wall = R · wall_factor. `test` draws afresh
# from the training distribution; `ood` has larger circles, relatively closer walls and
# more hazards (what `test` was before there was an `ood` split).
_TRAIN = {"radius": (1.0, 1.5), "wall_factor": (0.55, 0.75), "num_hazards": (2, 3)}
RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "train": _TRAIN,
    "test": _TRAIN,
    "ood": {"radius": (2.0, 2.5), "wall_factor": (0.55, 0.65), "num_hazards": (3, 5)},
}


@dataclass(frozen=True)
class CircleTask(Task):
    """One Circle task: run along the circle of `radius`, stay within |x| ≤ `wall`."""

    radius: float = 1.5
    """Radius R of the circle the reward asks the agent to run along."""
    wall: float = 1.125
    """Distance of the two walls x = ±wall from the centre; |x| > wall costs."""

    def validate(self) -> None:
        _check_finite(self)
        if not 0.0 < self.radius <= MAX_RADIUS:
            raise ValueError(f"radius: got {self.radius}; accepted (0, {MAX_RADIUS}]")
        if not 0.0 < self.wall < self.radius:
            raise ValueError(
                f"wall: got {self.wall}; accepted (0, radius={self.radius}) "
                "(walls outside the circle would never bind)")


@dataclass(frozen=True)
class CarCircleTask(CircleTask):
    """A Circle task with hazards (radius 0.12) at fixed positions."""

    hazards: tuple[tuple[float, float], ...] = ()
    """Hazard centres (x, y); cost while inside, proportional to depth."""

    def validate(self) -> None:
        super().validate()
        if len(self.hazards) > MAX_HAZARDS:
            raise ValueError(f"hazards: got {len(self.hazards)}; accepted at most {MAX_HAZARDS}")
        for h in self.hazards:
            if len(h) != 2 or not all(math.isfinite(c) for c in h):
                raise ValueError(f"hazards: each must be a finite (x, y); got {h!r}")
            if math.hypot(*h) > self.radius + 1.0:
                raise ValueError(f"hazards: {h} lies outside the arena (|p| ≤ radius + 1)")


def _check_finite(task: CircleTask) -> None:
    for name in ("radius", "wall"):
        value = getattr(task, name)
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"{name}: got {value!r}; accepted a finite number")


def _objects_xml() -> str:
    """Visual-only geoms (no contacts): the circle, two walls, hazard slots."""
    parts = [('<geom name="circle" type="cylinder" size="1.5 0.002" pos="0 0 0.002" '
              'contype="0" conaffinity="0" rgba="0 0.8 0 0.25"/>')]
    for i in range(2):
        parts.append(f'<geom name="wall{i}" type="box" size="0.02 3 0.05" pos="0 0 0.05" '
                     'contype="0" conaffinity="0" rgba="0.9 0.6 0 0.6"/>')
    for i in range(MAX_HAZARDS):
        parts.append(f'<geom name="hazard{i}" type="cylinder" size="{HAZARD_SIZE} 0.01" '
                     'pos="0 0 -1" contype="0" conaffinity="0" rgba="0 0 1 0.5"/>')
    return "\n    ".join(parts)


class CircleEnv(NavEnv):
    """Circle with Point or Car (SPEC §4.2); `hazards` adds the Car-Circle hazards."""

    def __init__(self, robot: Robot, task: CircleTask, with_hazards: bool,
                 render_mode: str | None = None) -> None:
        obs_dim = robot.sensor_dim + lidar.NUM_BINS * (2 if with_hazards else 1)
        super().__init__(robot, build_xml(robot, _objects_xml()), obs_dim, HORIZON, render_mode)
        self.metadata = {**self.metadata, "render_fps": round(1.0 / self.dt)}
        self._with_hazards = with_hazards
        self._geom = {n: self.model.geom(n).id for n in ("circle", "wall0", "wall1")}
        self._hazard_geoms = [self.model.geom(f"hazard{i}").id for i in range(MAX_HAZARDS)]
        self._qvel = self.data.qvel
        self.set_task(task)

    def set_task(self, task: Task) -> None:  # type: ignore[override]
        if not isinstance(task, CircleTask):
            raise TypeError(f"task: got {type(task).__name__}; accepted CircleTask")
        task.validate()
        self.task = task
        self.radius, self.wall = float(task.radius), float(task.wall)
        hazards = getattr(task, "hazards", ()) if self._with_hazards else ()
        self.hazards = np.array(hazards, dtype=np.float64).reshape(-1, 2)
        self._hazard_list = self.hazards.tolist()
        self._hazard_blocks = [0] * len(self.hazards)
        m = self.model
        m.geom_size[self._geom["circle"], 0] = self.radius
        m.geom_pos[self._geom["wall0"], 0] = self.wall
        m.geom_pos[self._geom["wall1"], 0] = -self.wall
        for i, g in enumerate(self._hazard_geoms):  # unused slots sink below the floor
            m.geom_pos[g] = (*self._hazard_list[i], 0.01) if i < len(self.hazards) else (0, 0, -1)
        self.view_distance = 2.5 * self.radius + 2.0

    def _place(self) -> None:
        rng = self.np_random
        for _ in range(1000):
            x, y = rng.uniform(-START_HALF, START_HALF, 2)
            if all(math.hypot(x - hx, y - hy) > HAZARD_SIZE + AGENT_KEEPOUT
                   for hx, hy in self._hazard_list):
                break
        self.robot.place(self.model, self.data, float(x), float(y),
                         float(rng.uniform(0.0, 2.0 * math.pi)))

    def _lidars(self, obs: np.ndarray) -> None:
        (px, py, pz), m = self.agent_pose()
        start = self.robot.sensor_dim
        # Lidar toward the centre (0, 0, 0): ((0, 0, 0) − pos) @ R (lidar.ego_xy).
        ex = -px * m[0] - py * m[3] - pz * m[6]
        ey = -px * m[1] - py * m[4] - pz * m[7]
        vals = [0.0] * lidar.NUM_BINS
        lidar.add_point(vals, ex, ey, LIDAR_MAX_DIST)
        obs[start:start + lidar.NUM_BINS] = vals
        if self._with_hazards:
            ego = lidar.ego_xy(self.hazards, self._xpos, self._xmat)
            lidar.scatter(obs[start + lidar.NUM_BINS:], ego, self._hazard_blocks, LIDAR_MAX_DIST)

    def _reward_cost(self) -> tuple[float, dict[str, Any]]:
        x, y = self._xpos[0], self._xpos[1]
        u, v = self._qvel[0], self._qvel[1]  # world linear velocity of the agent body
        reward, cost_walls = circle_reward_cost(x, y, u, v, self.radius, self.wall)
        cost_hazards = 0.0
        for hx, hy in self._hazard_list:  # depth inside each hazard (Safety-Gymnasium)
            cost_hazards += max(0.0, HAZARD_SIZE - math.hypot(x - hx, y - hy))
        cost = 1.0 if cost_walls > 0.0 or cost_hazards > 0.0 else 0.0
        info = {"cost": cost, "cost_walls": cost_walls}
        if self._with_hazards:
            info["cost_hazards"] = cost_hazards
        return reward, info


def circle_reward_cost(x: float, y: float, u: float, v: float, radius: float,
                       wall: float) -> tuple[float, float]:
    """Circle reward and wall cost at position (x, y), world velocity (u, v) (SPEC §4.2)."""
    r = math.hypot(x, y)
    reward = 0.0 if r == 0.0 else 0.1 * ((-u * y + v * x) / r) / (1.0 + abs(r - radius))
    return float(reward), 1.0 if abs(x) > wall else 0.0


# The known-safe Point controller's measured bound (tests/test_fallback.py checks it on a
# grid of starts): for walls at or beyond CENTRE_WALL_MIN (the nearest wall the train and
# test splits draw), from any start beyond a wall it is back inside within
# CENTRE_STEPS_MAX steps (worst measured: 33, from x = ±0.8 with the wall at 0.55 and the
# heading along y; nearer walls take longer: 41 steps at 0.40). Turning in place moves the
# sphere's centre by a few millimetres, so a start less than CENTRE_START_MARGIN inside a
# wall may cross it for a few steps (measured: 9 steps at 0.5 mm, none at 5 mm); such
# starts are counted as beyond.
CENTRE_STEPS_MAX = 40
CENTRE_WALL_MIN = 0.55
CENTRE_START_MARGIN = 0.01


def point_to_centre_line(obs: np.ndarray) -> np.ndarray:
    """The Point's known-safe controller (obs (n, 28) -> actions (n, 2)): drive along the
    world x axis to x = 0, forward or backward whichever is nearer the robot's heading, and
    hold there. Its own position comes from the observation alone: the heading from the
    magnetometer (MuJoCo's field (0, −0.5, 0) in the body frame), the centre's egocentric
    direction and distance from the circle lidar (the strongest bin and its aliased
    neighbour, `lidar.add_point`). Its measured bound: CENTRE_STEPS_MAX above."""
    n, w = len(obs), 2.0 * math.pi / lidar.NUM_BINS
    s0 = POINT.sensor_dim
    bins = obs[:, s0:s0 + lidar.NUM_BINS]
    b = bins.argmax(1)
    s = bins[np.arange(n), b]
    alias = np.where(s > 0, bins[np.arange(n), (b + 1) % lidar.NUM_BINS] / np.maximum(s, 1e-12), 0.0)
    ang = (b + alias) * w  # the centre's egocentric angle
    dist = (1.0 - s) * LIDAR_MAX_DIST
    heading = np.arctan2(-obs[:, 9], -obs[:, 10])
    ex, ey = dist * np.cos(ang), dist * np.sin(ang)
    x = -(np.cos(heading) * ex - np.sin(heading) * ey)  # the robot's world x
    target = np.arctan2(np.sin(heading) * x, -np.cos(heading) * x)  # world (−x, 0), egocentric
    err = np.where(np.abs(target) <= math.pi / 2, target, target - math.pi * np.sign(target))
    turn = np.clip(3.0 * err, -1.0, 1.0)
    forward = np.clip(3.0 * np.cos(target) * np.abs(x), -1.0, 1.0)
    return np.stack([forward, turn], 1)


def sample_hazards(rng: np.random.Generator, radius: float, n: int) -> tuple[tuple[float, float], ...]:
    """`n` hazards near the track: angle uniform, distance R·U[0.85, 1.15], 0.4 apart."""
    points: list[tuple[float, float]] = []
    while len(points) < n:
        a, d = rng.uniform(0.0, 2.0 * math.pi), radius * rng.uniform(0.85, 1.15)
        p = (float(d * math.cos(a)), float(d * math.sin(a)))
        if all(math.hypot(p[0] - q[0], p[1] - q[1]) >= 0.4 for q in points):
            points.append(p)
    return tuple(points)


class PointCircleSuite(Suite):
    """Point-Circle: circle radius and wall distance vary per task (SPEC §4.2)."""

    id = "point-circle"
    description = "Point robot runs along a circle of radius R; walls at |x| = wall cost."
    task_type = CircleTask
    family = "continuous"
    horizon = HORIZON
    cost_type = "undiscounted"
    # Meta-CPO-style limit: 25 wall steps per 500. A reward-only policy circles at R and
    # spends ≈ (2/π)·arccos(wall/R) ≥ 46% of each lap beyond a wall (wall/R ≤ 0.75),
    # i.e. > 100 steps per episode once circling (benchmarks/env_speed_navigation.py).
    cost_limit = 25.0
    cost_doc = "1 per step while |x| > wall (0/1 indicator); limit 25 per 500 steps"
    robot: Robot = POINT
    with_hazards = False
    splits = SPLITS

    def sample_tasks(self, n: int, rng: np.random.Generator,
                     split: str = "train") -> list[Task]:
        self.check_split(split)
        r = RANGES[split]
        tasks: list[Task] = []
        for _ in range(n):
            radius = float(rng.uniform(*r["radius"]))
            wall = radius * float(rng.uniform(*r["wall_factor"]))
            tasks.append(self._task(rng, split, radius, wall))
        return tasks

    def _task(self, rng: np.random.Generator, split: str, radius: float,
              wall: float) -> CircleTask:
        return CircleTask(radius=radius, wall=wall)

    def make(self, task: Task, render_mode: str | None = None, **kwargs: Any) -> CircleEnv:
        if not isinstance(task, self.task_type):
            raise TypeError(f"task: got {type(task).__name__}; accepted {self.task_type.__name__}")
        check_no_kwargs(kwargs)
        return CircleEnv(self.robot, task, self.with_hazards, render_mode=render_mode)

    def known_safe(self, task: Task) -> KnownSafe | None:
        """Point without hazards, walls at CENTRE_WALL_MIN or beyond: `point_to_centre_line`.
        Only a start beyond a wall (or within CENTRE_START_MARGIN of it) costs, at most
        CENTRE_STEPS_MAX steps; x starts uniform in [−0.8, 0.8], so the expected episode
        cost is at most (0.8 − wall + margin)⁺/0.8 · CENTRE_STEPS_MAX (measured, not proven)."""
        if self.robot is not POINT or self.with_hazards:
            return None
        assert isinstance(task, CircleTask)
        if task.wall < CENTRE_WALL_MIN:
            return None
        beyond = min(1.0, max(0.0, START_HALF - task.wall + CENTRE_START_MARGIN) / START_HALF)
        return KnownSafe(ScriptedPolicy(2, point_to_centre_line, "drive to x = 0 and hold"),
                         np.array([beyond * CENTRE_STEPS_MAX]),
                         f"P(start within {CENTRE_START_MARGIN} of a wall or beyond) {beyond:.3f} x at most "
                         f"{CENTRE_STEPS_MAX} steps beyond (measured)")

    def param_ranges(self, split: str) -> list[ParamRange]:
        self.check_split(split)
        r = RANGES[split]
        return [ParamRange("radius", *r["radius"], doc="circle radius R"),
                ParamRange("wall_factor", *r["wall_factor"], doc="wall = R · wall_factor")]


class CarCircleSuite(PointCircleSuite):
    """Car-Circle with hazards (the paper's task): the Car robot and a few hazards near the
    track. Its observation is 56 wide (24 sensors, circle lidar, hazards lidar), not the
    40 of Safety-Gymnasium's SafetyCarCircle1, which has no hazards: a policy for that
    one comes from `car-circle-nohazards`."""

    id = "car-circle"
    description = ("Car-Circle with hazards (the paper's task): Car robot runs along a circle "
                   "of radius R; walls at |x| = wall and hazards (radius 0.12) on the track cost. "
                   "Observation 56 wide (a hazards lidar after the circle lidar); "
                   "SafetyCarCircle1's 40-wide one is car-circle-nohazards.")
    task_type = CarCircleTask
    cost_limit = 25.0
    cost_doc = ("1 per step while |x| > wall or inside a hazard (0/1 indicator); "
                "limit 25 per 500 steps")
    robot = CAR
    with_hazards = True

    def _task(self, rng: np.random.Generator, split: str, radius: float,
              wall: float) -> CircleTask:
        lo, hi = RANGES[split]["num_hazards"]
        n = int(rng.integers(lo, hi + 1))
        return CarCircleTask(radius=radius, wall=wall, hazards=sample_hazards(rng, radius, n))

    def param_ranges(self, split: str) -> list[ParamRange]:
        circle = super().param_ranges(split)
        lo, hi = RANGES[split]["num_hazards"]
        return [*circle, ParamRange("num_hazards", lo, hi, doc="hazards at R·U[0.85, 1.15]")]


class CarCircleNoHazardsSuite(PointCircleSuite):
    """Car-Circle without hazards: Safety-Gymnasium's SafetyCarCircle1 layout, 40-wide
    observation (24 sensors, circle lidar), so a policy moves between the two."""

    id = "car-circle-nohazards"
    description = ("Car robot runs along a circle of radius R; walls at |x| = wall cost. No "
                   "hazards: observation 40 wide, as SafetyCarCircle1.")
    robot = CAR
