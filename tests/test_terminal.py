"""toonlab.terminal: plain progress lines and piped Rich consoles."""

import io

from rich.table import Table

from toonlab.terminal import PIPED_WIDTH, LineProgress, clock, console


def test_line_progress_prints_every_n_and_the_last_with_rate_and_eta():
    now = [0.0]
    out = io.StringIO()
    p = LineProgress("clip.mp4", 60, "frame", every=25, stream=out, clock_fn=lambda: now[0])
    for done in (8, 16, 24, 32, 40, 48, 56, 60):
        now[0] = done / 4  # 4 frames/s
        p.update(done)
    assert out.getvalue().splitlines() == ["clip.mp4: 32/60 frames, 4.00 frames/s, ETA 0:00:07",
                                           "clip.mp4: 56/60 frames, 4.00 frames/s, ETA 0:00:01",
                                           "clip.mp4: 60/60 frames, 4.00 frames/s, ETA 0:00:00"]
    p.update(60)  # nothing new: no second last line
    unknown = LineProgress("x", None, "frame", stream=out, clock_fn=lambda: 2.0)
    unknown.start = 0.0
    unknown.update(3, note="a.png")
    assert out.getvalue().splitlines()[-1] == "x: 3/? frames, 1.50 frames/s (a.png)"
    assert clock(3725.4) == "1:02:05"


def test_piped_console_does_not_wrap_at_80_columns(capsys):
    con = console()  # pytest captures stdout: not a terminal
    assert not con.is_terminal and con.width == PIPED_WIDTH
    note = "note: " + "https://example.org/" + "a" * 150
    table = Table()
    table.add_column("metric")
    table.add_column("value")
    table.add_row("a_long_metric_name " * 6, "1.0")
    con.print(note, markup=False)
    con.print(table)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == note
    assert max(len(line) for line in lines[1:]) < 200  # the table takes its natural width, one row per line
    assert sum("a_long_metric_name" in line for line in lines) == 1
