"""The `dreamgym` command line: the demo, and one-line errors for bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import imageio.v3 as iio

from dreamgym.cli import main


def test_demo_shows_the_dream_return_next_to_the_real_one(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--model", str(tiny_model_dir), "--gif-steps", "6", "--max-steps", "15",
                 "--out", str(out)]) == 0
    summary = json.loads((out / "demo.json").read_text())
    assert summary["dream"]["steps"] == 15  # the tiny model never terminates, so the episode hits the cap
    assert summary["real"]["steps"] == 15 and isinstance(summary["real"]["return"], float)
    assert summary["driver"] == "correlated random actions"
    frames = iio.imread(out / "dream.gif")
    assert frames.shape[0] == 7 and frames.shape[1:3] == (256, 256)
    printed = capsys.readouterr().out
    assert f"dream return {summary['dream']['return']:.1f}" in printed
    assert f"real return {summary['real']['return']:.1f}" in printed
    assert main(["demo", "--model", str(tiny_model_dir), "--gif-steps", "2", "--max-steps", "5", "--no-real",
                 "--out", str(out)]) == 0
    assert "real" not in json.loads((out / "demo.json").read_text())


def test_missing_model_folder_is_one_clear_line(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "dreamgym.cli", "demo", "--model", str(tmp_path / "nope"), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "does not exist" in result.stderr and "Traceback" not in result.stderr
