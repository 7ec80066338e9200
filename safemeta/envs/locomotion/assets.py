"""Gymnasium's v5 MuJoCo models, compiled without littering.

Gymnasium's ``half_cheetah.xml`` sets ``<compiler settotalmass="14">``. MuJoCo 4
deprecates that attribute: compiling it prints a warning and appends it to
``MUJOCO_LOG.TXT`` in the current directory. We fix it at the source: the
attribute is stripped from the XML text and the same scaling is applied to the
compiled model with ``mj_setTotalmass`` + ``mj_setConst``, which MuJoCo's
message recommends and which gives bit-identical masses and inertias.
"""

from __future__ import annotations

import functools
import os
import re

import gymnasium
import mujoco

ASSETS_DIR = os.path.join(os.path.dirname(gymnasium.__file__), "envs", "mujoco", "assets")
_TOTALMASS = re.compile(r'\s+settotalmass\s*=\s*"([^"]*)"')


def asset_path(xml_name: str) -> str:
    """Path of one of Gymnasium's MuJoCo XML assets, e.g. ``"half_cheetah.xml"``."""
    return os.path.join(ASSETS_DIR, xml_name)


@functools.cache
def patched_xml(xml_name: str) -> tuple[str, float | None]:
    """The asset's XML without ``settotalmass``, and the total mass it asked for."""
    with open(asset_path(xml_name), encoding="utf-8") as f:
        text = f.read()
    match = _TOTALMASS.search(text)
    if match is None:
        return text, None
    return _TOTALMASS.sub("", text, count=1), float(match.group(1))


def compile_model(xml_name: str) -> mujoco.MjModel:
    """Compile a Gymnasium asset with no deprecation warning and no log file."""
    text, total_mass = patched_xml(xml_name)
    model = mujoco.MjModel.from_xml_string(text)
    if total_mass is not None:
        mujoco.mj_setTotalmass(model, total_mass)
        mujoco.mj_setConst(model, mujoco.MjData(model))
    return model
