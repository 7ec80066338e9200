"""Point and Car robots in MJCF (SPEC §4.2), with Safety-Gymnasium 1.0 mechanics.

Each robot is an MJCF fragment (its agent body, sensors and actuators); `build_xml`
puts it into a world with the task's objects. The observation sensors are declared
first and in the Safety-Gymnasium order (accelerometer, velocimeter, gyro,
magnetometer; Car: then rear-ball angular velocity and quaternion), so they sit
contiguous at the start of ``data.sensordata``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import mujoco
import numpy as np

_SENSORS = """
    <accelerometer site="agent" name="accelerometer"/>
    <velocimeter site="agent" name="velocimeter"/>
    <gyro site="agent" name="gyro"/>
    <magnetometer site="agent" name="magnetometer"/>"""

# Point: slide x, slide y, hinge z; sphere radius 0.1; forward force motor on the
# agent site and a velocity actuator on the z hinge, gear 0.3, force ±0.05 (SPEC §4.2).
_POINT_BODY = """
    <body name="agent" pos="0 0 .1">
      <joint type="slide" axis="1 0 0" name="x" damping="0.01"/>
      <joint type="slide" axis="0 1 0" name="y" damping="0.01"/>
      <joint type="hinge" axis="0 0 1" name="z" damping="0.005"/>
      <geom name="agent" type="sphere" size=".1" density="1" friction="1 0.01 0.01"/>
      <geom name="pointarrow" pos="0.1 0 0" size="0.05 0.05 0.05" type="box" density="1"
            rgba="0.0039 0.1529 0.3961 1"/>
      <site name="agent" size="0.032" rgba="1 0 0 .1"/>
    </body>"""

_POINT_ACTUATORS = """
    <motor gear="0.3 0 0 0 0 0" site="agent" name="x" ctrlrange="-1 1" ctrllimited="true"
           forcerange="-.05 .05" forcelimited="true"/>
    <velocity gear="0.3" joint="z" name="z" ctrlrange="-1 1" ctrllimited="true"
              forcerange="-.05 .05" forcelimited="true"/>"""

# Car: free-joint box, two driven wheels, a rear ball caster; the body's -y axis is
# forward, as in Safety-Gymnasium's car, so sensor frames agree with it.
_CAR_BODY = """
    <body name="agent" pos="0 0 .1">
      <joint type="free" name="agent" damping="0"/>
      <geom name="agent" type="box" size=".1 .1 .05" density="5"/>
      <geom name="back_bumper" type="box" pos="0 .15 0" size=".1 .01 .05" density="5"
            rgba="0.0039 0.1529 0.3961 1"/>
      <geom name="back_connector" type="box" pos="0 .125 0" size=".01 .025 .03" density="5"
            rgba="0.0039 0.1529 0.3961 1"/>
      <geom name="front_bumper" type="box" pos="0 -.165 0" size=".05 .01 .05" density="5"
            rgba="0.0039 0.1529 0.3961 1"/>
      <geom name="front_connector" type="box" pos="0 -.13 .04" size=".05 .03 .01" density="5"
            rgba="0.0039 0.1529 0.3961 1"/>
      <site name="agent" size="0.032" rgba="1 0 0 .1"/>
      <body name="left" pos="-.1 .1 -.05">
        <joint type="hinge" name="left" axis="1 0 0"/>
        <geom type="cylinder" name="left" size=".05" density="5" fromto="-.055 0 0 -0.005 0 0"/>
      </body>
      <body name="right" pos=".1 .1 -.05">
        <joint type="hinge" name="right" axis="1 0 0"/>
        <geom type="cylinder" name="right" size=".05" density="5" fromto="0.005 0 0 .055 0 0"/>
      </body>
      <body name="rear" pos="0 -.1 -.05">
        <joint name="rear" type="ball"/>
        <geom name="rear" type="sphere" size=".05" density="5"/>
      </body>
    </body>"""

_CAR_SENSORS = """
    <ballangvel joint="rear" name="ballangvel_rear"/>
    <ballquat joint="rear" name="ballquat_rear"/>"""

_CAR_ACTUATORS = """
    <motor gear="1" joint="left" name="left" ctrlrange="-1 1" ctrllimited="true"
           forcerange="-.02 .02" forcelimited="true"/>
    <motor gear="1" joint="right" name="right" ctrlrange="-1 1" ctrllimited="true"
           forcerange="-.02 .02" forcelimited="true"/>"""

_WORLD = """<mujoco model="{name}">
  <option timestep="{timestep}"/>
  <visual><global offwidth="640" offheight="480"/></visual>
  <default>
    <geom condim="6" rgba="0.7412 0.0431 0.1843 1"/>
    <joint damping=".001"/>
  </default>
  <asset>
    <texture name="grid" type="2d" builtin="checker" width="256" height="256"
             rgb1=".92 .92 .92" rgb2=".82 .82 .82"/>
    <material name="grid" texture="grid" texrepeat="8 8"/>
  </asset>
  <worldbody>
    <light pos="0 0 6" dir="0 0 -1" directional="true"/>
    <geom name="floor" type="plane" size="{floor} {floor} 0.1" material="grid" rgba=".5 .5 .5 1"
          condim="6"/>
    {body}
    {objects}
  </worldbody>{equality}
  <sensor>{sensors}
  </sensor>
  <actuator>{actuators}
  </actuator>
</mujoco>
"""


@dataclass(frozen=True)
class Robot:
    """One robot's MJCF pieces and its simulation constants (SPEC §4.2)."""

    name: str
    body: str
    sensors: str
    actuators: str
    timestep: float
    substeps: int
    sensor_dim: int  # observation size of the sensors (Car: the quaternion becomes 3×3)

    def place(self, model: mujoco.MjModel, data: mujoco.MjData, x: float, y: float,
              heading: float) -> None:
        """Put the agent at (x, y) with yaw `heading`, at rest (qpos written directly)."""
        if self.name == "point":
            data.qpos[0:3] = (x, y, heading)
            return
        # Free joint: position then quaternion of a yaw rotation; rear ball at identity.
        half = 0.5 * heading
        data.qpos[0:7] = (x, y, 0.1, math.cos(half), 0.0, 0.0, math.sin(half))
        data.qpos[9:13] = (1.0, 0.0, 0.0, 0.0)


POINT = Robot("point", _POINT_BODY, _SENSORS, _POINT_ACTUATORS, 0.002, 10, 12)
CAR = Robot("car", _CAR_BODY, _SENSORS + _CAR_SENSORS, _CAR_ACTUATORS, 0.004, 10, 24)
ROBOTS = {"point": POINT, "car": CAR}


def build_xml(robot: Robot, objects: str = "", floor: float = 5.0, equality: str = "") -> str:
    """The world MJCF: floor, the robot, the task's object bodies/geoms and their
    equality constraints (<equality> content, e.g. gremlin welds)."""
    eq = f"\n  <equality>\n    {equality}\n  </equality>" if equality else ""
    return _WORLD.format(name=robot.name, timestep=robot.timestep, floor=floor,
                         body=robot.body, objects=objects, equality=eq, sensors=robot.sensors,
                         actuators=robot.actuators)


def read_sensors(robot: Robot, sensordata: np.ndarray, out: np.ndarray) -> None:
    """Write the sensor observation into `out[:robot.sensor_dim]` (SPEC §4.2 order)."""
    out[0:12] = sensordata[0:12]
    if robot.name == "car":
        out[12:15] = sensordata[12:15]  # rear-ball angular velocity
        mat = out[15:24]  # rear-ball orientation 3×3, row by row
        mujoco.mju_quat2Mat(mat, sensordata[15:19])
