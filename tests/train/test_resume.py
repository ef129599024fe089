import json
from pathlib import Path

import pytest

from toonlab.errors import ToonlabError, UsageError
from toonlab.train.checkpoint import load_state
from toonlab.train.config import resolve_run_config
from toonlab.train.trainer import train

from .conftest import run_config, write_yaml

K = 4  # the split falls inside the adversarial phase (init 2 + adv 6)


def _final_state(run_dir):
    return load_state(sorted((run_dir / "checkpoints").glob("state-*"))[-1])


def run_files(run: Path) -> dict:
    """Every file of a run dir → its bytes; metrics.jsonl as records without the wall-clock ``images_per_s``,
    env.json without ``git_commit``;
    .safetensors as (metadata, tensor bytes), since safetensors writes its metadata map in a random order."""
    from safetensors import safe_open

    out = {}
    for p in sorted(run.rglob("*")):
        if p.is_file():
            data = p.read_bytes()
            if p.name == "metrics.jsonl":
                data = [{k: v for k, v in json.loads(x).items() if k != "images_per_s"} for x in data.splitlines()]
            elif p.name == "env.json":  # two separate runs: the tree's commit may move between them
                data = {k: v for k, v in json.loads(data).items() if k != "git_commit"}
            elif p.suffix == ".safetensors":
                with safe_open(str(p), framework="pt") as f:
                    data = (f.metadata(), {k: (str(t.dtype), tuple(t.shape), t.numpy().tobytes())
                                           for k in f.keys() for t in [f.get_tensor(k)]})
            out[str(p.relative_to(run))] = data
    return out


def assert_resume_equals_fresh(fresh: Path, resumed: Path, rerun_fresh) -> None:
    """Every file of ``resumed`` equals ``fresh``'s. On a mismatch ``rerun_fresh()`` trains the uninterrupted run
    again into a new dir: if that second fresh run differs from the first as well, CPU training itself was not
    reproducible in this process (seen ~1 run in 3 on the shared 2-core machine for toon2real and CTSS at
    2 threads, never with the resume as the only difference: a BLAS / oneDNN kernel's alignment- or
    scheduling-dependent summation order is the suspect) and the resume cannot be judged — skipped with the
    files named; if it agrees, the resume is what differs and the test fails."""
    a, b = run_files(fresh), run_files(resumed)
    b.pop("overrides.jsonl", None)
    assert sorted(a) == sorted(b) and "checkpoints/state-0000003.safetensors" in a
    differ = [f for f in a if a[f] != b[f]]
    if not differ:
        return
    again = run_files(rerun_fresh())
    unstable = [f for f in a if a[f] != again.get(f)]
    if unstable:
        pytest.skip(f"two fresh runs differ here ({', '.join(unstable[:3])}): CPU training not reproducible "
                    "in this process, the resume cannot be judged")
    assert not differ, f"the resumed run differs from the uninterrupted one: {differ}"


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_is_bit_exact(tmp_path, tiny_data, workers):
    """2k steps in one go == k steps, resume, k more steps: every file of the run dir (weights, optimisers, EMA,
    RNG, counters, best.safetensors and its metric window, exports' metadata, samples, metrics, config)."""
    base = dict(model={"noise": 0.3}, train={"phase_steps": {"init": 2, "adv": 6}, "ema": 0.9, "ckpt_every": 3,
                                             "sample_every": 2},
                workers=workers)
    run = tmp_path / "run"  # both runs live at this path in turn, so their config.yaml files can be equal
    train(write_yaml(tmp_path / "whole.yaml", run_config(tmp_path, tiny_data, **base)))
    run.rename(tmp_path / "whole")
    split = run_config(tmp_path, tiny_data, **base)
    split["train"]["max_steps"] = K
    train(write_yaml(tmp_path / "split.yaml", split))
    assert _final_state(run)["step"] == K
    train(None, ["train.max_steps=null"], resume=run)
    a, b = run_files(tmp_path / "whole"), run_files(run)
    assert json.loads(b.pop("overrides.jsonl"))["changes"] == {"train.max_steps": {"from": K, "to": None}}
    assert "checkpoints/best.safetensors" in a and "samples/step-000008.png" in a
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name] == b[name], name
    assert [r["step"] for r in b["metrics.jsonl"]] == list(range(1, 2 * K + 1))


def test_resume_errors(tmp_path, tiny_data):
    with pytest.raises(UsageError, match="not a run dir"):
        train(None, resume=tmp_path / "nothing")
    cfg = run_config(tmp_path, tiny_data, train={"phase_steps": {"init": 1, "adv": 1}})
    train(write_yaml(tmp_path / "c.yaml", cfg))
    state = sorted((tmp_path / "run" / "checkpoints").glob("state-*"))[-1]
    state.write_bytes(state.read_bytes()[:100])
    with pytest.raises(ToonlabError, match="not a readable training state"):
        train(None, resume=tmp_path / "run")
    with pytest.raises(UsageError, match="give no CONFIG"):
        train(tmp_path / "c.yaml", resume=tmp_path / "run")
    assert resolve_run_config(cfg).train.max_steps is None


def test_resume_with_a_shortened_phase_moves_on(tmp_path, tiny_data):
    """A phase stopped early (max_steps / max_minutes) can be closed on resume by shortening it in phase_steps."""
    cfg = run_config(tmp_path, tiny_data, train={"phase_steps": {"init": 100, "adv": 100}, "max_steps": 2})
    train(write_yaml(tmp_path / "c.yaml", cfg))
    out = train(None, ["train.phase_steps={init: 2, adv: 2}", "train.max_steps=null"], resume=tmp_path / "run")
    assert out["step"] == 4
    phases = [json.loads(x).get("phase") for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert phases == ["init", "init", "adv", "adv"]
    assert set(load_state(out["state"])["optimizers"]) == {"adv.D", "adv.G"}


def check_real_model_resume(tmp_path: Path, name: str, extra: tuple[str, ...] = ()) -> Path:
    """``name``'s tiny recipe (plus ``extra`` overrides), 3 steps in one go == 2 steps + resume + 1 step: every file
    of the run dir (:func:`assert_resume_equals_fresh`). Returns the resumed run dir."""
    import shutil

    from toonlab.data.synth import make_synthtoon

    data = make_synthtoon(tmp_path / "st", n=4, size=32, seed=0, n_test=2)
    cartoons = data / "train" / "cartoons"
    if name == "multistyle":
        for style in ("hayao", "shinkai"):
            shutil.copytree(cartoons, tmp_path / "styles" / style)
        cartoons = tmp_path / "styles"
    recipe = Path(__file__).resolve().parents[2] / "configs" / f"{name}-tiny.yaml"
    cycle = name in ("toon2real", "cyclegan", "unit", "singlegan")  # one adversarial phase, no init
    common = [f"data.photos={data / 'train/photos'}", f"data.cartoons={cartoons}", "train.progress=false",
              "train.tensorboard=false",  # event files carry wall-clock times
              "train.phase_steps={adv: 3}" if cycle else "train.phase_steps={init: 1, adv: 2}", *extra]
    if name in ("toon2real", "cyclegan"):  # a 2-image pool is full after step 1: resume must restore it
        common.append("model.pool_size=2")
    run = tmp_path / "run"  # every run at this path in turn, so that config.yaml files can be equal
    train(recipe, common + [f"train.run_dir={run}"])
    run.rename(tmp_path / "a")
    train(recipe, common + [f"train.run_dir={run}", "train.max_steps=2"])
    train(None, ["train.max_steps=null"], resume=run)
    assert json.loads((run / "overrides.jsonl").read_text())["changes"] == {
        "train.max_steps": {"from": 2, "to": None}}

    def rerun_fresh():
        train(recipe, common + [f"train.run_dir={run}"])
        return run.rename(tmp_path / "again")

    resumed = run.rename(tmp_path / "resumed")
    assert_resume_equals_fresh(tmp_path / "a", resumed, rerun_fresh)
    return resumed


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ctss", "cartoongan", "animegan", "multistyle", "salcbam", "toon2real", "cyclegan",
                                  "white_box", "unit", "singlegan"])
def test_real_models_resume_bit_exact(tmp_path, name):
    """Tiny recipe, 3 steps in one go == 2 steps + resume + 1 step, for every registered system: every file of
    the run dir."""
    check_real_model_resume(tmp_path, name)
