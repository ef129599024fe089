"""Device helpers: glibc keeps freed CPU memory for the next forward pass, and releases it (``keep_cpu_heap``)."""

import json
import os
import platform
import statistics
import subprocess
import sys

import pytest

_CHILD = r"""
import json, resource, torch
from toonlab.device import keep_cpu_heap

torch.set_num_threads(1)
net = torch.nn.Sequential(torch.nn.Conv2d(3, 32, 3, padding=1), torch.nn.ReflectionPad2d(1),
                          torch.nn.Conv2d(32, 32, 3), torch.nn.GroupNorm(1, 32), torch.nn.Conv2d(32, 3, 3, padding=1))
x = torch.rand(1, 3, 512, 512)  # 32-channel maps of 32 MiB: over glibc's largest dynamic mmap threshold
faults = []
with torch.inference_mode():
    for keep in (True,) * 7 + (False,) * 2:  # kept for seven passes, then released for two
        keep_cpu_heap(keep)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        net(x)
        faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"kept": keep_cpu_heap(True), "faults": faults}))
"""


def _child(**env: str) -> dict:
    clean = {k: v for k, v in os.environ.items()
             if k not in ("TOONLAB_CPU_HEAP", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")}
    res = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True, timeout=120,
                         env={**clean, **env})
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="a glibc setting")
def test_freed_cpu_memory_is_reused_without_page_faults():
    """Passes of a net with 32 MiB maps: with glibc's default every pass maps its large maps afresh (tens of
    thousands of 4 KiB page faults each); kept, the heap settles after two or three passes and then faults next to
    nothing — most passes none, now and then one 32 MiB map (8,192 faults) lands on fresh pages, so the median
    of the later kept passes is asserted; released again, the passes fault as before. The user's own glibc
    settings and TOONLAB_CPU_HEAP=return leave glibc's default alone."""
    kept = _child()
    assert kept["kept"] and statistics.median(kept["faults"][2:7]) < 1_000, kept
    assert min(kept["faults"][7:]) > 20_000, kept  # released
    default = _child(TOONLAB_CPU_HEAP="return")
    assert not default["kept"] and min(default["faults"]) > 20_000, default
    assert not _child(MALLOC_MMAP_THRESHOLD_="1048576")["kept"]
    assert not _child(GLIBC_TUNABLES="glibc.malloc.trim_threshold=1")["kept"]
