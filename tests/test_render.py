"""`safemeta render` and the report's video (issue 13): the numbers on the frames, the cost
mark, the size and frame count of what is written, and one-line errors."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import gymnasium as gym
import imageio.v3 as iio
import mujoco
import numpy as np
import pytest

from safemeta.cli import main
from safemeta.envs.video import save_video
from safemeta.experiment import render as R
from safemeta.experiment.runner import load_algorithm
from safemeta.nn.policy import GaussianPolicy

TINY = ["--env", "point-circle", "--no-progress"] + [
    a for kv in ("iterations=1", "meta_batch=2", "episodes_per_task=3", "horizon=40", "val_tasks=1",
                 "test_tasks=2", "test_steps=1", "eval_episodes=1", "hidden=16", "checkpoint_every=1")
    for a in ("--set", kv)]


def read_gif(path: Path) -> np.ndarray:
    """(frames, height, width, 3) as a browser would show them."""
    return iio.imread(path, index=None)[..., :3]


@pytest.fixture(autouse=True)
def video_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests look at the report's video, whatever the session's switch says."""
    monkeypatch.setenv(R.REPORT_SWITCH, "1")


def one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("safemeta: error: "), err
    return err


def marked(frames: np.ndarray, panel_width: int, panel: int = 0) -> np.ndarray:
    """(frames,) whether panel `panel`'s cost border is drawn: the left border strip is red."""
    x0 = panel * panel_width
    strip = frames[:, R.BAND + R.MARK_WIDTH: -R.MARK_WIDTH, x0 + 1: x0 + R.MARK_WIDTH - 1].astype(int)
    red = (strip[..., 0] > 200) & (strip[..., 1] < 60) & (strip[..., 2] < 60)
    return red.mean(axis=(1, 2)) > 0.9


# ------------------------------------------------------------------ numbers and drawing

def test_frame_records_on_known_numbers() -> None:
    """Rewards 1..5 and costs 0,0,1,0,2 over 5 steps, a frame every 2 steps, 4 frames: frame i
    covers steps 2i+1..2i+2; the episode ends inside frame 2, frame 3 pads it."""
    rec = R.frame_records([1, 2, 3, 4, 5], np.array([[0], [0], [1], [0], [2]]), every=2, frames=4)
    assert rec["t"].tolist() == [2, 4, 5, 5]
    assert rec["reward"].tolist() == [3, 10, 15, 15]
    assert rec["cost"][:, 0].tolist() == [0, 1, 3, 3]
    assert rec["frame_cost"][:, 0].tolist() == [0, 1, 2, 0]
    assert rec["done"].tolist() == [False, False, False, True]
    # two costs: a frame is marked when any of them is positive in its steps
    two = R.frame_records([0] * 4, np.array([[0, 0], [0, 0.5], [0, 0], [0, 0]]), every=1, frames=4)
    clip = R.Clip(0, [], two["t"], two["reward"], two["cost"], two["frame_cost"], two["done"])
    assert clip.marks.tolist() == [False, True, False, False]


def test_label_lines_on_known_numbers() -> None:
    assert R.label_lines(2, 120, 12.345, 4.0, 25.0) == ("step 2  t 120", "reward 12.3  cost 4 / 25")
    assert R.label_lines(0, 7, -0.5, 30.0, 25.0, done=True) == ("step 0  t 7  (episode over)",
                                                               "reward -0.5  cost 30 / 25")


def test_panel_has_the_requested_size_and_a_red_border_only_when_marked() -> None:
    image = np.full((60, 80, 3), 200, np.uint8)  # grey, 4:3 like a navigation render
    on = R.draw_panel(image, ("a", "b"), True, (120, 120))
    off = R.draw_panel(image, ("a", "b"), False, (120, 120))
    assert on.shape == off.shape == (120, 120, 3) and on.dtype == np.uint8
    assert marked(on[None], 120).tolist() == [True]
    assert marked(off[None], 120).tolist() == [False]
    assert (on[R.BAND + R.MARK_WIDTH + 20, 60] == 200).all()  # the render itself is untouched inside


class Scheduled(gym.Env):
    """Cost 1 on env steps 3, 4, 5 and 11 (1-based), else 0; a grey 48x64 frame."""

    metadata = {"render_modes": ["rgb_array"]}
    COSTLY = {3, 4, 5, 11}

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Box(-1, 1, (3,), np.float64)
        self.action_space = gym.spaces.Box(-1, 1, (2,), np.float32)
        self.render_mode = "rgb_array"
        self.k = 0

    def reset(self, *, seed: int | None = None, options: Any = None) -> tuple[np.ndarray, dict]:
        self.k = 0
        return np.zeros(3), {}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.k += 1
        return np.zeros(3), 0.5, False, False, {"cost": float(self.k in self.COSTLY)}

    def render(self) -> np.ndarray:
        return np.full((48, 64, 3), 90 + 10 * self.k, np.uint8)


def test_exactly_the_frames_with_positive_recorded_cost_are_marked_in_the_gif(tmp_path: Path) -> None:
    """12 steps, a frame every 2: frames cover steps (1,2) (3,4) (5,6) (7,8) (9,10) (11,12), so
    frames 1, 2 and 5 had cost; read back from the GIF, exactly those carry the border."""
    spec = R.VideoSpec(frames=6, every=2, size=(140, 120), layout="sequence")
    policy = GaussianPolicy(3, 2, (8,))
    clips = [R.run_clip(Scheduled(), policy, t, 12, spec, 1) for t in (0, 1)]
    assert clips[0].marks.tolist() == [False, True, True, False, False, True]
    assert clips[0].cost[:, 0].tolist() == [0, 2, 3, 3, 3, 4]
    assert clips[0].reward.tolist() == [1, 2, 3, 4, 5, 6]
    out = tmp_path / "v.gif"
    save_video(R.compose(clips, 2.0, spec), str(out), fps=spec.fps)
    frames = read_gif(out)
    assert frames.shape == (12, 120, 140, 3)  # 2 policies x 6 frames, in sequence
    assert marked(frames, 140).tolist() == [False, True, True, False, False, True] * 2


def test_report_gif_is_refused_with_one_line_by_a_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(R.REPORT_SWITCH, "0")
    lines = R.report_video(object(), None, 1, Path("/nonexistent"))  # type: ignore[arg-type]
    assert [x for x in lines if x.startswith("No video")] == [f"No video: turned off ({R.REPORT_SWITCH}=0)."]


def test_gl_problem_is_one_line_naming_both_backends(monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(backend: str) -> None:
        raise RuntimeError(f"no {backend} here\nsecond line")

    for var in ("MUJOCO_GL", "DISPLAY", "WAYLAND_DISPLAY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(R, "_probe", fail)
    R.gl_problem.cache_clear()
    try:
        msg = R.gl_problem()
    finally:
        R.gl_problem.cache_clear()
    assert msg is not None and "\n" not in msg
    assert "egl: RuntimeError: no egl here" in msg and "osmesa: RuntimeError: no osmesa here" in msg
    monkeypatch.setenv("MUJOCO_GL", "bogus")
    assert R.gl_problem.__wrapped__() == ("MUJOCO_GL='bogus' is not a MuJoCo GL backend; "
                                          "accepted egl, osmesa, glfw")


# ------------------------------------------------------------------ a tiny trained run

@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Point-Circle, one iteration, two test tasks, one adaptation step, horizon 40; the
    report's video on (whatever the environment of the test session says)."""
    if R.gl_problem() is not None:
        pytest.skip(f"no offscreen rendering here: {R.gl_problem()}")
    out = tmp_path_factory.mktemp("render") / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(R.REPORT_SWITCH, "1")
        assert main(["train", *TINY, "--out", str(out)]) == 0
    return out


def test_report_embeds_a_small_gif_of_step_0_beside_the_last_step(run: Path) -> None:
    report = (run / "report" / "report.md").read_text()
    assert "![policy](policy.gif)" in report and "No video" not in report
    gif = run / "report" / R.REPORT_GIF
    assert gif.stat().st_size < 5_000_000
    frames = read_gif(gif)
    width, height = R.REPORT_SPEC.size
    assert frames.shape == (R.REPORT_SPEC.frames, height, 2 * width, 3)  # steps 0 and 1, side by side


def test_report_gif_hook_for_comparisons_writes_the_same_gif_or_says_why(run: Path, tmp_path: Path) -> None:
    assert R.report_gif(run, tmp_path / "c" / "a.gif") is None
    width, height = R.REPORT_SPEC.size
    assert read_gif(tmp_path / "c" / "a.gif").shape == (R.REPORT_SPEC.frames, height, 2 * width, 3)
    why = R.report_gif(tmp_path / "nothing", tmp_path / "b.gif")
    assert why is not None and why.startswith("No video: RUN_DIR:") and "\n" not in why
    assert not (tmp_path / "b.gif").exists()


def test_render_writes_the_requested_frames_and_size(run: Path, tmp_path: Path, capsys) -> None:
    """Steps 0..2 (3 policies) x 6 frames of 160x130: in sequence 18 frames of 160x130, side
    by side 6 frames of 480x130; the printed lines give each policy's episode."""
    seq, side = tmp_path / "seq.gif", tmp_path / "side.gif"
    base = ["render", str(run), "--task", "1", "--steps", "2", "--frames", "6", "--size", "160x130"]
    assert main([*base, "--layout", "sequence", "--out", str(seq)]) == 0
    assert read_gif(seq).shape == (18, 130, 160, 3)
    assert main([*base, "--out", str(side)]) == 0  # auto: side by side up to 4 policies
    assert read_gif(side).shape == (6, 130, 480, 3)
    printed = capsys.readouterr().out
    assert [ln.split(":")[0] for ln in printed.splitlines() if ln.startswith("step")] == ["step 0", "step 1",
                                                                                          "step 2"] * 2


def test_the_point_beyond_a_wall_is_marked_and_within_the_walls_is_not(run: Path, tmp_path: Path) -> None:
    """Walls at |x| = 0.01: the Point starts (uniform in [-0.8, 0.8]^2) beyond one and every
    frame whose steps had cost is marked; walls at 3.9: no cost, no mark."""
    out = tmp_path / "v.gif"
    for wall, expect_cost in ((0.01, True), (3.9, False)):
        task_file = tmp_path / f"w{wall}.json"
        task_file.write_text(f'[{{"radius": 4.0, "wall": {wall}}}]')
        spec = R.VideoSpec(frames=8, every=5, size=(160, 150), layout="side")
        path, clips = R.render_run(run, task_file=str(task_file), steps=1, out=out, spec=spec)
        frames = read_gif(path)
        assert frames.shape == (8, 150, 320, 3)
        for panel, clip in enumerate(clips):
            assert clip.marks.any() == expect_cost
            assert marked(frames, 160, panel).tolist() == clip.marks.tolist()
            assert np.all(clip.frame_cost[clip.marks] > 0) and np.all(clip.frame_cost[~clip.marks] == 0)


def test_render_errors_are_one_line(run: Path, tmp_path: Path, capsys) -> None:
    cases = [(["--task", "7"], "--task: got 7; accepted 0..1"),
             (["--out", str(tmp_path / "v.avi")], "--out: got 'v.avi'; accepted a .gif or .mp4"),
             (["--size", "big"], "--size: got 'big'"),
             (["--layout", "grid"], "layout: got 'grid'"),
             (["--steps", "-1"], "--steps: got -1")]
    for args, match in cases:
        assert main(["render", str(run), *args]) == 2
        assert match in one_line(capsys)
    if importlib.util.find_spec("imageio_ffmpeg") is None:  # refused before any work
        assert main(["render", str(run), "--out", str(tmp_path / "v.mp4")]) == 2
        assert "pip install imageio-ffmpeg" in one_line(capsys)
    assert main(["render", str(tmp_path / "nothing")]) == 2
    assert "not a safemeta run directory" in capsys.readouterr().err


def test_when_rendering_fails_render_says_why_in_one_line_and_the_report_in_one_line(
        run: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    def no_gl(*args: Any, **kw: Any) -> None:
        raise RuntimeError("cannot create an EGL context")

    monkeypatch.setattr(mujoco, "Renderer", no_gl)
    monkeypatch.setattr(R, "gl_problem", lambda: "offscreen rendering does not work here (egl: ...)")
    assert main(["render", str(run), "--frames", "2"]) == 2
    err = capsys.readouterr().err
    assert err == "safemeta: error: rendering failed: offscreen rendering does not work here (egl: ...)\n"
    algo, tasks, *_ = load_algorithm(run)
    try:
        lines = R.report_video(algo, tasks["test"][0], 1, run / "unused")
    finally:
        algo.close()
    assert [x for x in lines if x.startswith("No video")] == [
        "No video: rendering failed: offscreen rendering does not work here (egl: ...)"]


def test_a_tabular_run_has_no_video_and_render_says_so(tmp_path: Path, capsys) -> None:
    out = tmp_path / "tab"
    sets = ("iterations=2", "val_tasks=1", "test_tasks=1", "test_steps=1", "meta_batch=2")
    args = [a for kv in sets for a in ("--set", kv)]
    assert main(["train", "--env", "tabular-grid", "--no-progress", *args, "--out", str(out)]) == 0
    report = (out / "report" / "report.md").read_text()
    assert sum(ln.startswith("No video") for ln in report.splitlines()) == 1
    assert not (out / "report" / R.REPORT_GIF).exists()
    capsys.readouterr()
    assert main(["render", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "tabular CMDP: there is nothing to render" in err
