"""benchmarks/gpu_train_score.py: the device command's quick CPU run (slow suite) and its deadline kill."""

import json
import sys
import time
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))
import gpu_train_score  # noqa: E402


@pytest.mark.slow
def test_quick_cpu_run_scores_ctss_and_survives_a_crashing_system(tmp_path):
    """One system trains and is scored, one crashes (an unknown name) and leaves one line; ≤ 8 files come back."""
    import subprocess

    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(BENCH / "gpu_train_score.py"), "--device", "cpu", "--quick",
                           "--systems", "ctss,no_such_system", "--out", str(out), "--work", str(tmp_path / "w")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    res = json.loads((out / "results.json").read_text())
    ctss = res["systems"]["ctss"]
    assert ctss["returncode"] == 0 and ctss["steps"] == 2
    assert 0 < ctss["psnr"] < 60 and 0 <= ctss["ssim"] <= 1 and 0 <= ctss["edge_f1"] <= 1
    assert "error" in res["systems"]["no_such_system"] and "\n" not in res["systems"]["no_such_system"]["error"]
    assert res["real_set"]["built"] or res["real_set"]["why"]
    files = sorted(p.name for p in out.iterdir())
    assert files == ["ctss.tar", "grid.png", "log.txt", "results.json"]
    assert all(p.stat().st_size <= 16 * 2 ** 20 for p in out.iterdir())
    import tarfile

    with tarfile.open(out / "ctss.tar") as tar:
        names = tar.getnames()
    synth = [n for n in names if n.startswith("ctss/synth/") and n.endswith(".png")]
    real = [n for n in names if n.startswith("ctss/real/") and n.endswith(".png")]
    # the real set's test photos are translated too where its Debian packages are installed (CI installs them)
    assert len(synth) == 4 and (len(real) > 0) == bool(res["real_set"]["built"])
    assert "ctss/latest.safetensors" in names
    assert res["files"]["ctss.tar"] == {"outputs": len(synth) + len(real), "export_included": True}


def test_a_child_past_its_deadline_is_killed_with_its_group(tmp_path, monkeypatch):
    """run_child sends SIGTERM to the child's process group at budget + allowance, SIGKILL after the grace."""
    monkeypatch.setattr(gpu_train_score, "KILL_GRACE_S", 1.0)
    monkeypatch.setattr(sys, "executable", "/bin/sh")  # a child that ignores SIGTERM and never ends
    monkeypatch.setattr(gpu_train_score, "__file__", str(tmp_path / "stubborn.sh"))
    (tmp_path / "stubborn.sh").write_text("trap '' TERM\nsleep 60 &\nwait\nwait\n")
    args = type("A", (), {"device": "cpu", "size": 32, "workers": 0, "init_steps": 1, "ckpt_every": 2,
                          "log_every": 1, "perceptual": "auto", "batch": None, "max_steps": None,
                          "score_allowance": 1.0})()
    run = tmp_path / "run"
    run.mkdir()
    t0 = time.monotonic()
    rec = gpu_train_score.run_child("x", args, tmp_path, None, run, 0.0, lambda m: None)
    assert time.monotonic() - t0 < 10
    assert rec["error"] == "killed at its deadline (1 s): SIGTERM, then SIGKILL"


def test_salcbam_trains_on_saliency_maps_prepared_once(tmp_path):
    """A system that needs saliency gets the parent's prepared maps as data.saliency; the others do not."""
    from toonlab.data.synth import make_synthtoon

    data = make_synthtoon(tmp_path / "synth", n=4, size=32, seed=0, n_test=2, workers=1)
    result: dict = {}
    gpu_train_score.prepare_saliency(["ctss"], data, result)
    assert "saliency" not in result and not (data / "train" / "saliency").exists()
    gpu_train_score.prepare_saliency(["ctss", "salcbam"], data, result)
    assert result["saliency"]["maps"] == 4 and result["saliency"]["failed"] == 0
    from PIL import Image

    maps = sorted((data / "train" / "saliency").glob("*.png"))
    assert [m.stem for m in maps] == sorted(p.stem for p in (data / "train" / "photos").iterdir())
    assert Image.open(maps[0]).mode == "L"
    args = type("A", (), {"device": "cpu", "size": 32, "workers": 0, "init_steps": 1, "ckpt_every": 2,
                          "log_every": 1, "perceptual": "random", "batch": 2, "max_steps": 2})()
    sal = [o for o in gpu_train_score.system_overrides("salcbam", args, data, tmp_path / "r", 1.0)
           if o.startswith("data.saliency=")]
    assert sal == [f"data.saliency={data / 'train' / 'saliency'}"]
    assert not any(o.startswith("data.saliency=") for o in
                   gpu_train_score.system_overrides("ctss", args, data, tmp_path / "r", 1.0))
