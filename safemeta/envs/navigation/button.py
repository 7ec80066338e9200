"""Point-Button (SPEC §4.2; Safety-Gymnasium Button mechanics, task = layout).

Four buttons (spheres, radius 0.1), one of them the goal. Reward: progress toward the
goal button (last distance − distance) plus 1 when the agent touches it; then a new
goal (always another button) is drawn and a 10-step pause starts, during which presses
do not count (Safety-Gym may redraw the same button and pay +1 again at once). Costs: touching a wrong
button outside the pause (info["cost_buttons"]), depth inside a hazard of radius 0.2
(info["cost_hazards"]), touching a gremlin, a 0.1 box orbiting its spawn point at
radius 0.35 and 1 rad/s (info["cost_gremlins"]). info["cost"] is the 0/1 indicator
"any cost > 0". 1000 steps.

A task is a layout: arena half-extent and the positions of buttons, hazards and
gremlin spawn points; each reset draws the agent's start and the first goal.
Observation (Safety-Gymnasium 1.0 order): 12 sensors, then 16-bin lidars `buttons`
(zero during the pause, as Safety-Gym), `goal`, `hazards`, `gremlins` (max_dist 3): 76.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from safemeta.envs.base import ParamRange, Suite, Task
from safemeta.envs.navigation import lidar
from safemeta.envs.navigation.engine import NavEnv, check_no_kwargs
from safemeta.envs.navigation.robots import POINT, Robot, build_xml

HORIZON = 1000
LIDAR_MAX_DIST = 3.0
NUM_BUTTONS = 4
BUTTON_SIZE = 0.1
HAZARD_SIZE = 0.2
GREMLIN_SIZE = 0.1
GREMLIN_TRAVEL = 0.35
MAX_HAZARDS = 8
MAX_GREMLINS = 6
MAX_EXTENT = 4.0
RESAMPLING_DELAY = 10
# Placement keepouts of Safety-Gymnasium: two objects keep k_a + k_b apart.
KEEPOUT = {"buttons": 0.2, "hazards": 0.18, "gremlins": 0.5, "agent": 0.4}
_ROLE_AGENT, _ROLE_BUTTON, _ROLE_GREMLIN = 1, 2, 3

RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "train": {"extent": (1.5, 1.7), "num_hazards": (2, 4), "num_gremlins": (2, 4)},
    "test": {"extent": (1.8, 2.1), "num_hazards": (6, 8), "num_gremlins": (4, 6)},
}

Points = tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class ButtonTask(Task):
    """One Button layout in the square [−extent, extent]²."""

    extent: float = 1.5
    """Half-width of the square arena in which objects (and the agent's start) lie."""
    buttons: Points = ((-1.0, -1.0), (-1.0, 1.0), (1.0, -1.0), (1.0, 1.0))
    """Centres of the four buttons."""
    hazards: Points = ()
    """Hazard centres (radius 0.2): cost while inside."""
    gremlins: Points = ()
    """Gremlin spawn points; each orbits its spawn point at radius 0.35."""

    def validate(self) -> None:
        if not isinstance(self.extent, (int, float)) or not 0.0 < self.extent <= MAX_EXTENT:
            raise ValueError(f"extent: got {self.extent!r}; accepted (0, {MAX_EXTENT}]")
        limits = {"buttons": (NUM_BUTTONS, NUM_BUTTONS), "hazards": (0, MAX_HAZARDS),
                  "gremlins": (0, MAX_GREMLINS)}
        for name, (lo, hi) in limits.items():
            points = getattr(self, name)
            if not lo <= len(points) <= hi:
                raise ValueError(f"{name}: got {len(points)}; accepted {lo} to {hi} positions")
            for p in points:
                _check_point(name, p, self.extent)
        _check_fits(self.extent, len(self.hazards), len(self.gremlins))
        _check_apart([(n, p) for n in limits for p in getattr(self, n)])

    @classmethod
    def sample(cls, rng: np.random.Generator, extent: float, num_hazards: int,
               num_gremlins: int) -> ButtonTask:
        """A random layout (rejection sampling with Safety-Gymnasium keepouts)."""
        _check_fits(extent, num_hazards, num_gremlins)
        counts = {"gremlins": num_gremlins, "buttons": NUM_BUTTONS, "hazards": num_hazards}
        for _ in range(100):
            placed = _place_all(rng, extent, counts)
            if placed is not None:
                task = cls(extent=float(extent), **placed)
                task.validate()
                return task
        raise ValueError(f"num_hazards: {num_hazards} hazards and {num_gremlins} gremlins "
                         f"could not be placed in extent {extent}; lower the counts")


def _check_point(name: str, p: Any, extent: float) -> None:
    if len(p) != 2 or not all(isinstance(c, (int, float)) and math.isfinite(c) for c in p):
        raise ValueError(f"{name}: each position must be a finite (x, y); got {p!r}")
    if max(abs(p[0]), abs(p[1])) > extent:
        raise ValueError(f"{name}: {tuple(p)} lies outside the arena [−{extent}, {extent}]²")


def _check_fits(extent: float, num_hazards: int, num_gremlins: int) -> None:
    """More objects than fit: their keepout discs would cover over 3/4 of the arena."""
    for name, n, hi in (("num_hazards", num_hazards, MAX_HAZARDS),
                        ("num_gremlins", num_gremlins, MAX_GREMLINS)):
        if not 0 <= n <= hi:
            raise ValueError(f"{name}: got {n}; accepted 0 to {hi}")
    area = math.pi * (NUM_BUTTONS * KEEPOUT["buttons"] ** 2 + num_hazards * KEEPOUT["hazards"] ** 2
                      + num_gremlins * KEEPOUT["gremlins"] ** 2 + KEEPOUT["agent"] ** 2)
    if area > 0.75 * (2.0 * extent) ** 2:
        raise ValueError(f"num_hazards: {num_hazards} hazards, {num_gremlins} gremlins and "
                         f"{NUM_BUTTONS} buttons do not fit in extent {extent}")


def _check_apart(objects: list[tuple[str, Any]]) -> None:
    for i, (name, p) in enumerate(objects):
        for other, q in objects[:i]:
            if math.hypot(p[0] - q[0], p[1] - q[1]) < KEEPOUT[name] + KEEPOUT[other]:
                raise ValueError(f"{name}: {tuple(p)} overlaps {other} at {tuple(q)}")


def _place_all(rng: np.random.Generator, extent: float,
               counts: dict[str, int]) -> dict[str, Points] | None:
    placed: list[tuple[str, tuple[float, float]]] = []
    for name, n in counts.items():
        for _ in range(n):
            p = _place_one(rng, extent, name, placed)
            if p is None:
                return None
            placed.append((name, p))
    return {name: tuple(p for n, p in placed if n == name) for name in counts}


def _place_one(rng: np.random.Generator, extent: float, name: str,
               placed: list[tuple[str, tuple[float, float]]]) -> tuple[float, float] | None:
    for _ in range(200):
        x, y = rng.uniform(-extent, extent, 2)
        if all(math.hypot(x - q[0], y - q[1]) >= KEEPOUT[name] + KEEPOUT[other] + 1e-9
               for other, q in placed):
            return float(x), float(y)
    return None


def _objects_xml() -> str:
    # Each button is its own static body, moved through body_pos: MuJoCo's collision
    # midphase caches a body's geom boxes in the body frame at compile time, so moving
    # a world geom's geom_pos would leave its collision box behind.
    parts = [f'<body name="button{i}" pos="{i} 0 0.1"><geom name="button{i}" type="sphere" '
             f'size="{BUTTON_SIZE}" rgba="1 0.5 0 1"/></body>' for i in range(NUM_BUTTONS)]
    parts.append('<geom name="goal" type="cylinder" size="0.16 0.004" pos="0 0 0.004" '
                 'contype="0" conaffinity="0" rgba="0 1 0 0.5"/>')
    parts += [f'<geom name="hazard{i}" type="cylinder" size="{HAZARD_SIZE} 0.01" pos="0 0 -1" '
              'contype="0" conaffinity="0" rgba="0 0 1 0.5"/>' for i in range(MAX_HAZARDS)]
    g = GREMLIN_SIZE
    parts += [f'<body name="gremlin{i}" mocap="true" pos="{100 + i} 100 {g + 0.005}">'
              f'<geom name="gremlin{i}" type="box" size="{g} {g} {g}" rgba="0.5 0 1 1"/></body>'
              for i in range(MAX_GREMLINS)]
    return "\n    ".join(parts)


class ButtonEnv(NavEnv):
    """Point-Button (SPEC §4.2)."""

    def __init__(self, robot: Robot, task: ButtonTask, render_mode: str | None = None) -> None:
        obs_dim = robot.sensor_dim + 4 * lidar.NUM_BINS
        super().__init__(robot, build_xml(robot, _objects_xml()), obs_dim, HORIZON, render_mode)
        self.metadata = {**self.metadata, "render_fps": round(1.0 / self.dt)}
        self._init_roles()
        self.goal = 0
        self.timer = 0
        self.last_dist_goal = 0.0
        self.set_task(task)

    def _init_roles(self) -> None:
        """Per-geom role tables (Python lists) for reading contacts."""
        m = self.model
        agent = m.body("agent").id
        self._role = [_ROLE_AGENT if b == agent else 0 for b in m.geom_bodyid.tolist()]
        self._button_of = [-1] * m.ngeom
        for i in range(NUM_BUTTONS):
            gid = m.geom(f"button{i}").id
            self._role[gid], self._button_of[gid] = _ROLE_BUTTON, i
        for i in range(MAX_GREMLINS):
            self._role[m.geom(f"gremlin{i}").id] = _ROLE_GREMLIN
        self._goal_geom = m.geom("goal").id
        self._gremlin_bodies = np.array([m.body(f"gremlin{i}").id for i in range(MAX_GREMLINS)])
        self._hazard_geoms = [m.geom(f"hazard{i}").id for i in range(MAX_HAZARDS)]

    def set_task(self, task: Task) -> None:  # type: ignore[override]
        if not isinstance(task, ButtonTask):
            raise TypeError(f"task: got {type(task).__name__}; accepted ButtonTask")
        task.validate()
        self.task = task
        self.buttons = np.array(task.buttons, dtype=np.float64)
        self.hazards = np.array(task.hazards, dtype=np.float64).reshape(-1, 2)
        self.gremlin_spawn = np.array(task.gremlins, dtype=np.float64).reshape(-1, 2)
        self._hazard_list = self.hazards.tolist()
        self._init_points()
        m = self.model
        for i in range(NUM_BUTTONS):
            m.body_pos[m.body(f"button{i}").id, :2] = self.buttons[i]
        for i, g in enumerate(self._hazard_geoms):  # unused slots sink below the floor
            m.geom_pos[g] = (*self._hazard_list[i], 0.01) if i < len(self.hazards) else (0, 0, -1)
        self.view_distance = 2.5 * task.extent + 2.0
        k = len(self.gremlin_spawn)  # slots unused by this task go back far away
        self.data.mocap_pos[k:] = m.body_pos[self._gremlin_bodies[k:]]
        self._move_gremlins(0.0)

    def _init_points(self) -> None:
        """All lidar-observed positions in one array, buttons first, then goal, hazards,
        gremlins; `_blocks` says which lidar (0 buttons, 1 goal, 2 hazards, 3 gremlins)."""
        nh, ng = len(self.hazards), len(self.gremlin_spawn)
        self._points = np.zeros((NUM_BUTTONS + 1 + nh + ng, 2))
        self._points[:NUM_BUTTONS] = self.buttons
        self._points[NUM_BUTTONS + 1:NUM_BUTTONS + 1 + nh] = self.hazards
        self._blocks = [0] * NUM_BUTTONS + [1] + [2] * nh + [3] * ng
        self._gremlin_rows = slice(NUM_BUTTONS + 1 + nh, None)

    def _move_gremlins(self, t: float) -> None:
        """Gremlin i at spawn_i + 0.35·(sin t, cos t) (mocap bodies; unused slots stay at
        their far-away model position, which mj_resetData restores)."""
        k = len(self.gremlin_spawn)
        if k:
            offset = (GREMLIN_TRAVEL * math.sin(t), GREMLIN_TRAVEL * math.cos(t))
            self.data.mocap_pos[:k, :2] = self.gremlin_spawn + offset

    def _place(self) -> None:
        rng = self.np_random
        extent = self.task.extent
        objects = [(self.buttons, KEEPOUT["buttons"]), (self.hazards, KEEPOUT["hazards"]),
                   (self.gremlin_spawn, KEEPOUT["gremlins"])]
        for _ in range(1000):
            xy = rng.uniform(-extent, extent, 2)
            if all(len(p) == 0 or np.min(np.hypot(*(p - xy).T)) >= k + KEEPOUT["agent"]
                   for p, k in objects):
                break
        self.robot.place(self.model, self.data, float(xy[0]), float(xy[1]),
                         float(rng.uniform(0.0, 2.0 * math.pi)))
        self._move_gremlins(0.0)
        self.timer = 0
        self._set_goal(int(rng.integers(NUM_BUTTONS)), float(xy[0]), float(xy[1]))

    def _set_goal(self, goal: int, x: float, y: float) -> None:
        """Make button `goal` the goal; (x, y) is the agent's position now."""
        self.goal = goal
        self.model.geom_pos[self._goal_geom, :2] = self.buttons[goal]
        self._points[NUM_BUTTONS] = self.buttons[goal]
        gx, gy = self.buttons[goal]
        self.last_dist_goal = math.hypot(x - gx, y - gy)

    def _before_step(self) -> None:
        self._move_gremlins(float(self.data.time))

    def _touches(self) -> tuple[list[int], int]:
        """Buttons the agent touches and its number of gremlin contacts, from MuJoCo's
        contacts (a Python loop: there are only a few contacts per step)."""
        role, button_of = self._role, self._button_of
        buttons, gremlins = [], 0
        for g1, g2 in self.data.contact.geom[:self.data.ncon].tolist():
            if role[g1] == _ROLE_AGENT:
                other = g2
            elif role[g2] == _ROLE_AGENT:
                other = g1
            else:
                continue
            if role[other] == _ROLE_BUTTON:
                buttons.append(button_of[other])
            elif role[other] == _ROLE_GREMLIN:
                gremlins += 1
        return buttons, gremlins

    def _reward_cost(self) -> tuple[float, dict[str, Any]]:
        buttons, gremlins = self._touches()
        x, y = self._xpos[0], self._xpos[1]
        # Costs first, with the pause timer as it was during the step (Safety-Gymnasium).
        cost_buttons = float(sum(b != self.goal for b in buttons)) if self.timer == 0 else 0.0
        cost_hazards = 0.0
        for hx, hy in self._hazard_list:
            cost_hazards += max(0.0, HAZARD_SIZE - math.hypot(x - hx, y - hy))
        cost_gremlins = float(gremlins)
        self.timer = max(0, self.timer - 1)
        gx, gy = self.buttons[self.goal]
        dist = math.hypot(x - gx, y - gy)
        reward = self.last_dist_goal - dist
        self.last_dist_goal = dist
        pressed = self.timer == 0 and self.goal in buttons
        if pressed:
            reward += 1.0
            self._new_goal()
        any_cost = cost_buttons > 0.0 or cost_hazards > 0.0 or cost_gremlins > 0.0
        info = {"cost": 1.0 if any_cost else 0.0, "cost_buttons": cost_buttons,
                "cost_hazards": cost_hazards, "cost_gremlins": cost_gremlins,
                "goal_pressed": pressed}
        return float(reward), info

    def _new_goal(self) -> None:
        """Another button becomes the goal and the 10-step pause starts."""
        choice = int(self.np_random.integers(NUM_BUTTONS - 1))
        self._set_goal(choice + (choice >= self.goal), self._xpos[0], self._xpos[1])
        self.timer = RESAMPLING_DELAY

    def _lidars(self, obs: np.ndarray) -> None:
        """Lidars buttons, goal, hazards, gremlins in one vectorised pass."""
        points = self._points
        points[self._gremlin_rows] = self.data.mocap_pos[:len(self.gremlin_spawn), :2]
        start = 0 if self.timer == 0 else NUM_BUTTONS  # buttons unseen during the pause
        ego = lidar.ego_xy(points[start:], self._xpos, self._xmat)
        lidar.scatter(obs[self.robot.sensor_dim:], ego, self._blocks[start:], LIDAR_MAX_DIST)


class PointButtonSuite(Suite):
    """Point-Button: arena extent, hazard and gremlin counts and layout vary per task."""

    id = "point-button"
    description = ("Point robot presses the goal button among four; wrong buttons, hazards "
                   "and orbiting gremlins cost.")
    task_type = ButtonTask
    family = "continuous"
    horizon = HORIZON
    cost_type = "undiscounted"
    # Safety-Gymnasium's customary limit, 25 per 1000 steps; a goal-chasing policy that
    # ignores cost crosses hazards, bumps gremlins and wrong buttons on the way.
    cost_limit = 25.0
    cost_doc = ("1 per step touching a wrong button (outside the pause), inside a hazard or "
                "touching a gremlin (0/1 indicator); limit 25 per 1000 steps")
    robot: Robot = POINT

    def sample_tasks(self, n: int, rng: np.random.Generator,
                     split: str = "train") -> list[Task]:
        Suite.check_split(split)
        r = RANGES[split]
        tasks: list[Task] = []
        for _ in range(n):
            extent = float(rng.uniform(*r["extent"]))
            num_hazards = int(rng.integers(r["num_hazards"][0], r["num_hazards"][1] + 1))
            num_gremlins = int(rng.integers(r["num_gremlins"][0], r["num_gremlins"][1] + 1))
            tasks.append(ButtonTask.sample(rng, extent, num_hazards, num_gremlins))
        return tasks

    def make(self, task: Task, render_mode: str | None = None, **kwargs: Any) -> ButtonEnv:
        if not isinstance(task, ButtonTask):
            raise TypeError(f"task: got {type(task).__name__}; accepted ButtonTask")
        check_no_kwargs(kwargs)
        return ButtonEnv(self.robot, task, render_mode=render_mode)

    def param_ranges(self, split: str) -> list[ParamRange]:
        Suite.check_split(split)
        r = RANGES[split]
        return [ParamRange("extent", *r["extent"], doc="arena half-width"),
                ParamRange("num_hazards", *r["num_hazards"], doc="hazards (radius 0.2)"),
                ParamRange("num_gremlins", *r["num_gremlins"], doc="gremlins (box 0.1)")]
