"""MuJoCo's warnings go to Python logging, not to the terminal and MUJOCO_LOG.TXT.

MuJoCo's default warning handler prints and appends to MUJOCO_LOG.TXT in the working
directory (an unstable simulation warns every step). The batched sampler detects
instabilities from MuJoCo's warning counters and truncates the episode (SPEC §8); the
text goes to the `safemeta.mujoco` logger at DEBUG level. A handler the user installed
first is kept.
"""

from __future__ import annotations

import logging

import mujoco

log = logging.getLogger("safemeta.mujoco")


def _to_logging(message: str) -> None:
    log.debug("%s", message)


def quiet_mujoco_warnings() -> None:
    if mujoco.get_mju_user_warning() is None:
        mujoco.set_mju_user_warning(_to_logging)


quiet_mujoco_warnings()
