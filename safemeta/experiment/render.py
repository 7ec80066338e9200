"""Watch a policy on a task: the meta-policy and its safe adaptation, rendered (`safemeta render`).

From a run's latest checkpoint, one task goes through meta-test's safe adaptation
(SPEC §2.7): at step t the current policy π^t collects the task's exploration data with
the task's own meta-test random stream, the learner estimates advantages and `adapt`
returns π^{t+1} (a step that failed verification returns π^t itself, so every policy
shown is one that passed). Each of π^0 (the meta-policy), ..., π^T then runs one episode
in an env made with `render_mode="rgb_array"`, all from the same start, and the frames are
written side by side (one panel per policy) or in sequence. Every panel is labelled with
the step, the episode's running reward and cost and the limit; a frame whose env steps
since the previous frame had a positive cost gets a red border and "COST".

Offscreen rendering: MUJOCO_GL as the user set it, else EGL, then OSMesa; when none works,
one line says so (`RenderError`; in a report, one line instead of the video).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from safemeta.config import ConfigError
from safemeta.envs.base import Suite, Task
from safemeta.rollout.batch import cost_vector

LAYOUTS = ("auto", "side", "sequence")
BAND = 30  # px: the label band above each panel's image (two lines of text)
MARK = (255, 0, 0)  # the colour of the cost mark: a border and the word COST
MARK_WIDTH = 4  # px of the border on frames with positive cost
MIN_SIZE = (96, BAND + 32)  # the smallest panel (width, height) the labels fit in
AUTO_SIDE_MAX = 4  # layout "auto": side by side up to this many policies, else in sequence
REPORT_GIF = "policy.gif"
# "0": reports carry no video (one line says so); test suites that do not look at it save
# about a second per continuous run.
REPORT_SWITCH = "SAFEMETA_REPORT_VIDEO"


class RenderError(ConfigError):
    """Rendering cannot be done here or for this run; the message is one line."""


@dataclass(frozen=True)
class VideoSpec:
    """What a video shows and how large it is."""

    frames: int = 40
    """Frames per policy."""
    every: int = 0
    """Env steps between frames (0: the horizon spread over `frames`, the whole episode)."""
    size: tuple[int, int] = (320, 270)
    """(width, height) of one policy's panel in pixels, label band included."""
    layout: str = "auto"
    """side (one panel per policy, side by side), sequence (one policy after another), or
    auto (side by side up to 4 policies, else in sequence)."""
    fps: int = 10
    """Frames per second of the video."""
    mean: bool = False
    """Act with the mean action instead of sampling (the costs measured are of sampled actions)."""
    seed: int = 0
    """Seed of the rendered episodes' start and action noise (the same for every policy)."""
    hq: bool = False
    """MuJoCo's shadows, reflections and anti-aliasing (about 10x slower with software GL)."""

    def check(self) -> None:
        """ConfigError naming the field when a value is out of range."""
        if self.frames < 1 or self.every < 0 or self.fps < 1:
            raise ConfigError(f"frames, every, fps: got {self.frames}, {self.every}, {self.fps}; "
                              "accepted frames >= 1, every >= 0, fps >= 1")
        if self.size[0] < MIN_SIZE[0] or self.size[1] < MIN_SIZE[1]:
            raise ConfigError(f"size: got {self.size[0]}x{self.size[1]}; accepted at least "
                              f"{MIN_SIZE[0]}x{MIN_SIZE[1]} (width x height of one panel)")
        if self.layout not in LAYOUTS:
            raise ConfigError(f"layout: got {self.layout!r}; accepted {', '.join(LAYOUTS)}")


# The report's video: step 0 beside the last step, small enough to open at once (a few
# hundred kB) and cheap enough to make after every run (see tests/test_render.py).
REPORT_SPEC = VideoSpec(frames=16, size=(200, 180), layout="side", fps=8)


@dataclass
class Clip:
    """One policy's rendered episode: per frame the image and the numbers on its label."""

    step: int  # adaptation step of the policy (0: the meta-policy)
    images: list[np.ndarray]  # raw renders, one per frame
    t: np.ndarray  # (F,) env steps taken when the frame was drawn
    reward: np.ndarray  # (F,) the episode's running reward
    cost: np.ndarray  # (F, p) the episode's running cost
    frame_cost: np.ndarray  # (F, p) cost of the env steps since the previous frame
    done: np.ndarray  # (F,) the episode had ended before this frame (its last image repeats)

    @property
    def marks(self) -> np.ndarray:
        """(F,) frames drawn with the cost mark: positive cost since the previous frame."""
        return np.any(self.frame_cost > 0, axis=1)


# ------------------------------------------------------------------ numbers on the frames

def frame_records(rewards: Sequence[float], costs: np.ndarray, every: int,
                  frames: int) -> dict[str, np.ndarray]:
    """An episode's per-step rewards (n,) and costs (n, p) -> per frame i (covering env steps
    i·every+1 .. (i+1)·every): env steps taken, running reward and cost, the cost of the
    frame's own steps, and whether the episode had already ended (a padding frame)."""
    r = np.asarray(rewards, np.float64)
    c = np.asarray(costs, np.float64).reshape(len(r), -1)
    ends = np.minimum(np.arange(1, frames + 1) * every, len(r))
    starts = np.minimum(np.arange(frames) * every, len(r))
    cum_r = np.concatenate([[0.0], np.cumsum(r)])
    cum_c = np.concatenate([np.zeros((1, c.shape[1])), np.cumsum(c, axis=0)])
    return {"t": ends, "reward": cum_r[ends], "cost": cum_c[ends], "frame_cost": cum_c[ends] - cum_c[starts],
            "done": starts >= len(r)}


def label_lines(step: int, t: int, reward: float, cost: float, limit: float,
                done: bool = False) -> tuple[str, str]:
    """The two label lines of a frame: step and env step; running reward and cost / limit."""
    head = f"step {step}  t {t}" + ("  (episode over)" if done else "")
    return head, f"reward {reward:.3g}  cost {cost:.3g} / {limit:.3g}"


# ------------------------------------------------------------------ drawing

@functools.cache
def _font(size: int) -> Any:
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: a fixed bitmap font
        return ImageFont.load_default()


def draw_panel(image: np.ndarray, lines: tuple[str, str], mark: bool, size: tuple[int, int],
               progress: float = 1.0) -> np.ndarray:
    """(height, width, 3) uint8: the label band above `image` resized to fill the rest;
    with `mark`, a red border around the image and "COST" in the band. A grey bar at the
    band's foot shows `progress` through the clip (it also keeps every frame distinct:
    Pillow's GIF writer merges equal consecutive frames, which would change the count)."""
    from PIL import Image, ImageDraw

    width, height = size
    panel = Image.new("RGB", (width, height), (24, 24, 24))
    view = Image.fromarray(np.ascontiguousarray(image[..., :3]).astype(np.uint8))
    # fit the render into the space below the band, keeping its aspect ratio
    scale = min(width / view.width, (height - BAND) / view.height)
    w, h = max(1, round(view.width * scale)), max(1, round(view.height * scale))
    corner = ((width - w) // 2, BAND + (height - BAND - h) // 2)
    panel.paste(view.resize((w, h), Image.Resampling.BILINEAR), corner)
    draw = ImageDraw.Draw(panel)
    font = _font(11)
    draw.text((4, 2), lines[0], fill=(255, 255, 255), font=font)
    draw.text((4, 16), lines[1], fill=(255, 255, 255), font=font)
    draw.rectangle((0, BAND - 2, max(0, round(progress * width) - 1), BAND - 1), fill=(140, 140, 140))
    if mark:
        draw.rectangle((0, BAND, width - 1, height - 1), outline=MARK, width=MARK_WIDTH)
        draw.text((width - 40, 2), "COST", fill=MARK, font=font)
    return np.asarray(panel)


def compose(clips: Sequence[Clip], limit: float, spec: VideoSpec) -> list[np.ndarray]:
    """The video's frames: one panel per clip side by side, or the clips one after another."""
    def panel(c: Clip, i: int) -> np.ndarray:
        lines = label_lines(c.step, int(c.t[i]), float(c.reward[i]), float(c.cost[i, 0]), limit,
                            bool(c.done[i]))
        return draw_panel(c.images[i], lines, bool(c.marks[i]), spec.size, (i + 1) / spec.frames)

    if layout_of(spec, len(clips)) == "side":
        return [np.concatenate([panel(c, i) for c in clips], axis=1) for i in range(spec.frames)]
    return [panel(c, i) for c in clips for i in range(spec.frames)]


def layout_of(spec: VideoSpec, n_policies: int) -> str:
    if spec.layout != "auto":
        return spec.layout
    return "side" if n_policies <= AUTO_SIDE_MAX else "sequence"


# ------------------------------------------------------------------ offscreen GL

def _probe(backend: str) -> None:
    context = importlib.import_module(f"mujoco.{backend}").GLContext(8, 8)
    context.make_current()
    context.free()


@functools.cache
def gl_problem() -> str | None:
    """Make offscreen rendering possible: keep MUJOCO_GL when the user set it, else try EGL,
    then OSMesa, and set it to the first that works. None when one works, else one line
    saying why (checked once per process: a GL context cannot be retried cheaply)."""
    requested = os.environ.get("MUJOCO_GL", "").lower()
    if not requested and (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return None  # a display: MuJoCo's own default (GLFW) works
    if requested and requested not in ("egl", "osmesa", "glfw"):
        return f"MUJOCO_GL={requested!r} is not a MuJoCo GL backend; accepted egl, osmesa, glfw"
    errors = []
    for backend in [requested] if requested else ["egl", "osmesa"]:
        platform = os.environ.get("PYOPENGL_PLATFORM")
        try:
            _probe(backend)
        except Exception as e:  # noqa: BLE001 - missing library, no device: try the next, report all
            errors.append(f"{backend}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
            if platform is None:  # the EGL import sets PYOPENGL_PLATFORM; OSMesa needs it unset
                os.environ.pop("PYOPENGL_PLATFORM", None)
            continue
        os.environ["MUJOCO_GL"] = backend
        return None
    hint = "" if requested else "; install EGL (libegl1) or OSMesa (libosmesa6), or set MUJOCO_GL"
    return "offscreen rendering does not work here (" + "; ".join(errors) + ")" + hint


# ------------------------------------------------------------------ rollouts

def render_env(suite: Suite, task: Task, size: tuple[int, int]) -> Any:
    """An env of `task` that renders rgb_array frames (at about `size` where the suite takes
    width/height, e.g. the locomotion suites; frames are resized to `size` anyway)."""
    try:
        return suite.make(task, render_mode="rgb_array", width=size[0], height=size[1] - BAND)
    except (TypeError, ValueError):  # this suite's make takes no size (navigation, most users')
        pass
    try:
        return suite.make(task, render_mode="rgb_array")
    except TypeError as e:
        raise RenderError(f"suite {suite.id}: make(task, render_mode='rgb_array') failed ({e}); "
                          "a suite renders when its make takes render_mode (docs/own-suite.md)") from None


def lighten(env: Any) -> None:
    """No shadows, reflections or multisampling in a MuJoCo env's renders: with software GL
    (Mesa's llvmpipe, the usual headless EGL) a 320x240 frame takes 0.2 s with them and
    0.02 s without. Only this video's own env is changed, before its first render."""
    import mujoco

    model = getattr(env.unwrapped, "model", None)
    if isinstance(model, mujoco.MjModel):
        model.vis.quality.shadowsize = 0
        model.vis.quality.offsamples = 0
        model.mat_reflectance[:] = 0.0


def run_clip(env: Any, policy: Any, step: int, horizon: int, spec: VideoSpec, num_costs: int) -> Clip:
    """`policy` (a GaussianPolicy) acting for one episode of `env` from `spec.seed`'s start;
    an image every `spec.every` env steps (and at the episode's end)."""
    every = spec.every or max(1, horizon // spec.frames)
    n = min(horizon, every * spec.frames)
    gen = torch.Generator().manual_seed(spec.seed)
    low, high = env.action_space.low, env.action_space.high
    obs, _ = env.reset(seed=spec.seed)
    rewards, costs, images = [], [], []
    for k in range(1, n + 1):
        x = np.asarray(obs, np.float32).reshape(1, -1)  # what the sampler hands a policy
        with torch.no_grad():
            act = policy(torch.as_tensor(x))[0].numpy() if spec.mean else policy.sample(x, gen)[0]
        obs, reward, terminated, truncated, info = env.step(np.clip(act[0], low, high))
        rewards.append(float(reward))
        costs.append(cost_vector(info, num_costs))
        end = terminated or truncated or k == n
        if k % every == 0 or end:
            images.append(_frame(env))
        if end:
            break
    rec = frame_records(rewards, np.array(costs), every, spec.frames)
    images += [images[-1]] * (spec.frames - len(images))  # the episode ended early: hold its last image
    return Clip(step, images[: spec.frames], rec["t"], rec["reward"], rec["cost"], rec["frame_cost"],
                rec["done"])


def _frame(env: Any) -> np.ndarray:
    try:
        image = env.render()
    except Exception as e:  # noqa: BLE001 - GL failures come in many types; one line for the user
        why = gl_problem() or f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        raise RenderError(f"rendering failed: {why}") from None
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] < 3:
        raise RenderError("the env's render() gave no H x W x 3 rgb_array frame; "
                          "a suite renders when its env supports render_mode='rgb_array'")
    return image


def adapted_policies(algo: Any, task: Task, index: int, steps: int) -> list[Any]:
    """π^0 (the meta-policy), π^1, ..., π^steps on `task` by meta-test's safe adaptation:
    data from the current policy with the task's meta-test stream (test task `index`),
    then `adapt` (which fits its critics and returns π^t itself where a step failed verification)."""
    from safemeta.meta_learner import Phase, torch_threads

    current = algo.meta_policies(1)
    out = [current[0].policy]
    with torch_threads(algo.cfg.torch_threads):
        for t in range(steps):
            data = algo.collect([task], current, Phase.TEST_DATA, t, index,
                                episodes=algo.cfg.test_episodes_per_task or None)
            current = algo.adapt(data, current)
            out.append(current[0].policy)
    return out


def policy_video(algo: Any, task: Task, index: int, steps: int, spec: VideoSpec, out: Path,
                 which: Sequence[int] | None = None) -> list[Clip]:
    """Adapt `algo`'s meta-policy on `task` for `steps` steps and write the video of the
    policies at the steps `which` (default all) to `out` (.gif or .mp4); returns the clips."""
    from safemeta.meta_learner import MetaLearner

    spec.check()
    suite = algo.suite
    if not isinstance(algo, MetaLearner):
        raise RenderError(f"suite {suite.id} is a tabular CMDP: there is nothing to render "
                          "(MuJoCo suites and suites whose env renders rgb_array frames are)")
    gl_problem()  # sets MUJOCO_GL before the first env renders; its message is used on failure
    policies = adapted_policies(algo, task, index, steps)
    shown = list(range(steps + 1)) if which is None else list(which)
    env = render_env(suite, task, spec.size)
    if not spec.hq:
        lighten(env)
    try:
        clips = [run_clip(env, policies[t], t, algo.horizon, spec, algo.num_costs) for t in shown]
    finally:
        env.close()
    _write(compose(clips, float(algo.cost_limit[0]), spec), out, spec.fps)
    return clips


def _write(frames: list[np.ndarray], out: Path, fps: int) -> None:
    from safemeta.envs.video import save_video

    if out.suffix.lower() == ".gif":
        write_gif(frames, out, fps)
        return
    try:
        save_video(frames, str(out), fps=fps)
    except (RuntimeError, ValueError) as e:  # .mp4 without imageio-ffmpeg, a wrong extension
        raise RenderError(str(e).splitlines()[0]) from None


def write_gif(frames: Sequence[np.ndarray], out: Path, fps: int) -> None:
    """A looping GIF, each frame quantised with Pillow's fast octree: 6x quicker than the
    median cut `save_video` gets from imageio (0.08 s against 0.5 s for 20 frames of 400x180),
    which matters for a video made after every run."""
    from PIL import Image

    out.parent.mkdir(parents=True, exist_ok=True)
    images = [Image.fromarray(np.ascontiguousarray(f)).quantize(256, method=Image.Quantize.FASTOCTREE)
              for f in frames]
    images[0].save(out, save_all=True, append_images=images[1:], duration=round(1000 / fps), loop=0)


# ------------------------------------------------------------------ from a run directory

def render_run(run_dir: Path, task_index: int | None = None, task_file: str | None = None,
               steps: int | None = None, out: Path | None = None, spec: VideoSpec = VideoSpec(),
               log: Callable[[str], None] = print) -> tuple[Path, list[Clip]]:
    """`safemeta render`: the video of test task `task_index` of the run (default 0), or of the
    first task of `task_file`, at adaptation steps 0..`steps` (default the run's test_steps)."""
    from safemeta.experiment.runner import read_task_file

    spec.check()
    if steps is not None and steps < 0:
        raise ConfigError(f"--steps: got {steps}; accepted an integer >= 0")
    if out is not None and out.suffix.lower() not in (".gif", ".mp4"):
        raise ConfigError(f"--out: got {out.name!r}; accepted a .gif or .mp4 file")
    mp4 = out is not None and out.suffix.lower() == ".mp4"
    if mp4 and importlib.util.find_spec("imageio_ffmpeg") is None:
        raise ConfigError("--out: writing .mp4 needs an ffmpeg writer; install it with "
                          "`pip install imageio-ffmpeg`, or write a .gif")
    from safemeta.experiment.runner import load_algorithm

    algo, tasks, *_ = load_algorithm(run_dir, log=log)
    try:
        if task_file is not None:
            given = read_task_file(algo.suite, task_file)
            if "test" not in given:
                raise ConfigError(f"task-file: {task_file} has no 'test' tasks; accepted a list of tasks")
            task, index, name = given["test"][0], 0, "task-file"
        else:
            index = 0 if task_index is None else task_index
            if not 0 <= index < len(tasks["test"]):
                raise ConfigError(f"--task: got {index}; accepted 0..{len(tasks['test']) - 1} "
                                  f"(the run's test tasks, tasks.json)")
            task, name = tasks["test"][index], f"task{index}"
        steps = algo.cfg.test_steps if steps is None else steps
        path = out or run_dir / "render" / f"{name}.gif"
        clips = policy_video(algo, task, index, steps, spec, path)
    finally:
        algo.close()
    return path, clips


def report_video(algo: Any, task: Task, steps: int, out_dir: Path,
                 spec: VideoSpec = REPORT_SPEC) -> list[str]:
    """The report's section: a GIF of test task 0 at step 0 and at the last step, or one
    line saying why there is none. Never raises for a rendering problem: a report must be
    written whatever the machine can draw."""
    head = ["## The policy on a test task", ""]
    if _switched_off():
        return head + [f"No video: turned off ({REPORT_SWITCH}=0).", ""]
    try:
        path = out_dir / REPORT_GIF
        clips = policy_video(algo, task, 0, steps, spec, path, which=sorted({0, steps}))
    except Exception as e:  # noqa: BLE001 - any failure is one line in the report, never a failed run
        return head + [f"No video: {str(e).splitlines()[0] if str(e) else type(e).__name__}", ""]
    parts = " and ".join(f"step {c.step} (reward {c.reward[-1]:.3g}, cost {c.cost[-1, 0]:.3g})"
                         for c in clips)
    return head + [f"Test task 0 ({_task_text(task)}): the meta-policy (step 0) beside the policy after "
                   f"{steps} safe adaptation step(s), one episode each from the same start; "
                   f"a red border marks frames with positive cost. {parts}; limit "
                   f"{float(algo.cost_limit[0]):.3g}.", "", f"![policy]({REPORT_GIF})", ""]


def _task_text(task: Task, limit: int = 160) -> str:
    """The task's fields, numbers to 3 digits, cut at `limit` characters (hazard lists are long)."""
    def short(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3g}"
        if isinstance(v, (list, tuple)):
            return "(" + ", ".join(short(x) for x in v) + ")"
        return str(v)

    text = ", ".join(f"{k} {short(v)}" for k, v in task.to_dict().items() if k != "type")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def report_gif(run_dir: Path | str, out_path: Path | str) -> str | None:
    """The report GIF of a finished run (test task 0, step 0 beside the run's last test step)
    written to `out_path`; None when written, else the one-line reason there is none (for
    `compare`'s report: the first seed of each algorithm)."""
    run_dir, out_path = Path(run_dir), Path(out_path)
    if _switched_off():
        return f"No video: turned off ({REPORT_SWITCH}=0)."
    try:
        from safemeta.experiment.runner import load_algorithm

        algo, tasks, *_ = load_algorithm(run_dir, log=lambda m: None)
    except Exception as e:  # noqa: BLE001 - a report line, never a failed comparison
        return f"No video: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
    try:
        steps = algo.cfg.test_steps
        policy_video(algo, tasks["test"][0], 0, steps, REPORT_SPEC, out_path, which=sorted({0, steps}))
    except Exception as e:  # noqa: BLE001
        return f"No video: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
    finally:
        algo.close()
    return None


def _switched_off() -> bool:
    return os.environ.get(REPORT_SWITCH, "1").strip().lower() in ("0", "false", "no", "off")
