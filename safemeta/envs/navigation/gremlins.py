"""Gremlins as Safety-Gymnasium 1.0 builds and moves them (SPEC §4.2, issue 12).

Safety-Gymnasium's gremlin is a free box (half-size 0.1, density 0.001: 8e-6 kg)
soft-welded (weld solref 0.02 1.5) to a mocap target. Before every physics substep
the target is put at spawn + 0.35·(sin t, cos t) at height 0.2 (the box's own height
0.1 plus the mocap body's offset 0.1), keeping the box's random yaw. The box starts
each episode at rest at its spawn point on the floor (z = 0.1) and, pulled by the
weld, reaches its orbit in about 10 steps; once there it trails the target by a few
centimetres. The agent's contacts with the box are the gremlin cost, and its lidar
sees the box's position (not the target's).

Here every gremlin slot is in the model from the start (compiled once): a mocap body
and a free body welded with relative pose identity, so the weld holds the box at the
mocap's position *and orientation*; the yaw goes into `mocap_quat`. Slots a task does
not use are parked far away with their weld off, floating still, so that they cost no
constraint rows: the boxes are compiled with gravity compensation and a used box gets
its weight back as an applied force at its centre of mass (`xfrc_applied`), which is
what gravity is for a free body. Without this the six slots made a step over 2× slower.
The targets move once per env step, to the substeps' mean phase (`ButtonEnv._physics`).
"""

from __future__ import annotations

import math

import mujoco
import numpy as np

SIZE = 0.1  # half-size of the box
TRAVEL = 0.35  # orbit radius around the spawn point
DENSITY = 0.001  # 8e-6 kg for the 0.2 box
HEIGHT = 2 * SIZE  # target height: the box's 0.1 plus the mocap body's 0.1 in Safety-Gym
WELD_SOLREF = "0.02 1.5"
_PARK = (100.0, 100.0)  # unused slots: (100 + i, 100)


def xml(n: int) -> tuple[str, str]:
    """Worldbody MJCF of `n` gremlin slots and their welds (<equality> content)."""
    bodies, welds = [], []
    for i in range(n):
        x, y = _PARK[0] + i, _PARK[1]
        bodies.append(
            f'<body name="gremlin{i}mocap" mocap="true" pos="{x} {y} {HEIGHT}"/>'
            f'<body name="gremlin{i}" pos="{x} {y} {HEIGHT}" gravcomp="1"><freejoint name="gremlin{i}"/>'
            f'<geom name="gremlin{i}" type="box" size="{SIZE} {SIZE} {SIZE}" '
            f'density="{DENSITY}" rgba="0.5 0 1 1"/></body>')
        welds.append(f'<weld name="gremlin{i}" body1="gremlin{i}mocap" body2="gremlin{i}" '
                     f'solref="{WELD_SOLREF}" relpose="0 0 0 1 0 0 0"/>')
    return "\n    ".join(bodies), "\n    ".join(welds)


class Gremlins:
    """The gremlin slots of one model/data pair: spawn points, reset, motion, positions."""

    def __init__(self, model: mujoco.MjModel, data: mujoco.MjData, n_slots: int) -> None:
        self.data = data
        self.n_slots = n_slots
        bodies = [model.body(f"gremlin{i}").id for i in range(n_slots)]
        self.body_ids = np.array(bodies, dtype=np.int64)
        self.mocap_ids = [int(model.body_mocapid[model.body(f"gremlin{i}mocap").id])
                          for i in range(n_slots)]
        assert self.mocap_ids == list(range(n_slots)), "gremlin mocaps must come first"
        self.qpos = [int(model.jnt_qposadr[model.joint(f"gremlin{i}").id]) for i in range(n_slots)]
        self.dofs = [int(model.jnt_dofadr[model.joint(f"gremlin{i}").id]) for i in range(n_slots)]
        self.geom_ids = [model.geom(f"gremlin{i}").id for i in range(n_slots)]
        self._qpos0 = model.qpos0.copy()
        self._weight = [float(model.body_mass[b] * model.opt.gravity[2]) for b in bodies]
        self._park = model.body_pos[[model.body(f"gremlin{i}mocap").id for i in range(n_slots)]].copy()
        self.spawn = np.zeros((0, 2))
        self._target = np.zeros((0, 2))

    @property
    def count(self) -> int:
        return len(self.spawn)

    def set_spawn(self, spawn: np.ndarray) -> None:
        """The task's spawn points (k, 2); slots k.. stay parked."""
        if len(spawn) > self.n_slots:
            raise ValueError(f"gremlins: got {len(spawn)}; accepted 0 to {self.n_slots}")
        self.spawn = np.array(spawn, dtype=np.float64).reshape(-1, 2)

    def reset(self, yaws: np.ndarray) -> None:
        """Each used box at rest on the floor at its spawn point with yaw `yaws[i]`, its
        target there too (Safety-Gym's freshly built model); unused slots parked."""
        d = self.data
        for i in range(self.count, self.n_slots):  # parked, at rest (the MJCF pose)
            a, v = self.qpos[i], self.dofs[i]
            d.qpos[a:a + 7] = self._qpos0[a:a + 7]
            d.qvel[v:v + 6] = 0.0
            d.mocap_pos[i] = self._park[i]
            d.mocap_quat[i] = (1.0, 0.0, 0.0, 0.0)
            d.eq_active[i] = 0
            d.xfrc_applied[self.body_ids[i]] = 0.0
        for i in range(self.count):
            d.eq_active[i] = 1
            d.xfrc_applied[self.body_ids[i], 2] = self._weight[i]  # gravity, see above
            half = 0.5 * float(yaws[i])
            quat = (math.cos(half), 0.0, 0.0, math.sin(half))
            x, y = self.spawn[i]
            a = self.qpos[i]
            d.qpos[a:a + 7] = (x, y, SIZE, *quat)
            d.qvel[self.dofs[i]:self.dofs[i] + 6] = 0.0
            d.mocap_pos[i] = (x, y, HEIGHT)  # move() puts it on the orbit before a step
            d.mocap_quat[i] = quat

    def move(self, t: float) -> None:
        """Targets at spawn + 0.35·(sin t, cos t), height 0.2 (Safety-Gym's `move`)."""
        k = self.count
        if k:
            self.data.mocap_pos[:k, :2] = self.spawn + (TRAVEL * math.sin(t), TRAVEL * math.cos(t))

    def positions(self) -> np.ndarray:
        """World (x, y) of the used boxes (what the gremlins lidar sees)."""
        return self.data.xpos[self.body_ids[:self.count], :2]
