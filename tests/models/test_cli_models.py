"""``toonlab models``: the registry table and an export checkpoint's description."""

import pytest
import torch
from typer.testing import CliRunner

from toonlab.checkpoint import save_export
from toonlab.cli import app
from toonlab.models import build_model, model_names
from toonlab.models._summary import summarize, translator_gflops


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    """Each test measures into (and reads) its own table cache."""
    monkeypatch.setenv("TOONLAB_CACHE", str(tmp_path / "cache"))


def _listing(monkeypatch=None, names=None):
    if names is not None:
        import toonlab.models

        monkeypatch.setattr(toonlab.models, "model_names", lambda: names)
    result = CliRunner().invoke(app, ["models"])
    assert result.exit_code == 0, result.output
    return result.output.splitlines()


def test_models_table_rows(monkeypatch):
    lines = _listing(monkeypatch, ["_hidden", "cartoongan", "ctss"])
    assert [line.split()[0] for line in lines] == ["model", "cartoongan", "ctss"]
    ctss = lines[2]
    assert "G 1.54M" in ctss and "D_img 0.39M" in ctss and "D_patch 0.10M" in ctss and " 52.2 " in ctss
    assert "G 11.13M" in lines[1] and " 108.8 " in lines[1]


@pytest.mark.slow  # builds all seven systems; some can only be measured on CPU at 256²
def test_models_lists_every_registered_system():
    lines = _listing()
    for name in model_names():
        if not name.startswith("_"):
            assert any(line.split()[0] == name for line in lines[1:]), name


def test_gflops_count_multiply_adds_twice():
    # one 3→1 1×1 conv without bias on 1×3×4×4: 16 pixels × 3 MACs × 2 FLOPs
    model = build_model("ctss")
    model.translator = lambda: torch.nn.Conv2d(3, 1, 1, bias=False)
    assert translator_gflops(model, 4) == pytest.approx(96 / 1e9)
    s = summarize("ctss")
    assert s.params == {"G": 1539520, "D_img": 391200, "D_patch": 98544} and s.default_size == 256


def test_models_describes_a_checkpoint_and_rejects_foreign_files(tmp_path):
    path = save_export(build_model("ctss", {"K": 16}), tmp_path / "g.safetensors", extra={"step": 7})
    result = CliRunner().invoke(app, ["models", str(path)])
    assert result.exit_code == 0, result.output
    assert "model: ctss" in result.output and "  K: 16" in result.output and "step: 7" in result.output
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"junk")
    result = CliRunner().invoke(app, ["models", str(bad)])
    assert result.exit_code == 1 and "error:" in result.output and "Traceback" not in result.output


def test_listing_is_cached_per_source_and_torch_version(monkeypatch):
    import dataclasses

    import toonlab.model_table
    import toonlab.models._summary

    first = _listing(monkeypatch, ["ctss"])
    direct = dataclasses.asdict(summarize("ctss"))  # the cached row holds the direct count
    assert toonlab.model_table.model_table() == [{**direct, "styles": list(direct["styles"])}]

    def no_build(name):
        raise AssertionError("a cached listing built a model")

    monkeypatch.setattr(toonlab.models._summary, "summarize", no_build)
    assert _listing() == first
    monkeypatch.setattr(toonlab.model_table, "version", lambda name: "0.0-other")  # another torch: measured anew
    with pytest.raises(AssertionError, match="built a model"):
        _listing()


def test_cached_listing_imports_neither_torch_nor_the_models(monkeypatch):
    import os
    import subprocess
    import sys

    measured = _listing(monkeypatch, ["ctss"])  # fills this test's cache
    probe = ("import sys; sys.argv = ['toonlab', 'models']\n"
             "from toonlab.cli import app\n"  # app, not main: main ends the process (FAST_EXIT_COMMANDS)
             "try:\n    app()\nexcept SystemExit:\n    pass\n"
             "print('imported:', 'torch' in sys.modules, 'toonlab.models' in sys.modules, file=sys.stderr)")
    warm = subprocess.run([sys.executable, "-c", probe], env=dict(os.environ), capture_output=True, text=True,
                          timeout=600)
    assert "imported: False False" in warm.stderr, warm.stderr
    assert warm.stdout.splitlines() == measured


def test_models_describes_a_run_dir_and_refuses_torchscript_clearly(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    save_export(build_model("ctss", {"K": 16}), run / "checkpoints" / "export-000004.safetensors")
    result = CliRunner().invoke(app, ["models", str(run)])
    assert result.exit_code == 0 and "model: ctss" in result.output, result.output
    scripted = tmp_path / "g.pt"
    torch.jit.save(torch.jit.script(torch.nn.Identity()), str(scripted))
    result = CliRunner().invoke(app, ["models", str(scripted)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert result.output.count("\n") == 1 and "TorchScript" in result.output and ".safetensors" in result.output


def test_multistyle_is_counted_on_the_meta_device(monkeypatch):
    import toonlab.models._summary as summary

    devices = []
    count = summary.translator_gflops
    monkeypatch.setattr(summary, "translator_gflops", lambda m, size, device="cpu": devices.append(str(device))
                        or count(m, size, device))
    s = summarize("multistyle")
    assert devices == ["meta"]  # no fallback to a real 256² pass on the CPU
    assert s.generator_gflops == pytest.approx(139.853299712) and s.styles == ("hayao", "shinkai")
