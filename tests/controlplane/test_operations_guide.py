"""The operations guide's table of periodic work says what beat really runs: one row per CELERY_BEAT_SCHEDULE entry,
with its task (and arguments) and its interval, and no row for work beat does not schedule."""

from __future__ import annotations

from pathlib import Path

from django.conf import settings

ROOT = Path(__file__).resolve().parents[2]
HEADING = "## What runs periodically"


def beat_table() -> list[tuple[str, str]]:
    """(task cell, every cell) of each row of the guide's beat table."""
    text = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")
    section = text[text.index(HEADING) :]
    section = section[: section.index("\n## ", len(HEADING))]
    rows = []
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not line.startswith("|") or cells[0] in ("task", "") or set(cells[0]) <= {"-"}:
            continue
        rows.append((cells[0], cells[1]))
    return rows


def interval(seconds: float) -> str:
    """How the guide writes an interval: 30 s, 5 min, 1 h, 1 day."""
    for unit, size in (("day", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)} {unit}"
    return f"{seconds:g} s"


def test_the_guide_lists_every_beat_entry_with_its_interval_and_nothing_else() -> None:
    rows = beat_table()
    expected = []
    for entry in settings.CELERY_BEAT_SCHEDULE.values():
        task = f"`{entry['task']}`" + "".join(f" (`{arg}`)" for arg in entry.get("args", ()))
        expected.append((task, interval(float(entry["schedule"]))))
    shown = []
    for task, every in rows:
        # An interval read from a setting is written as the setting and its default: `NAME` (5 min).
        shown.append((task, every.rsplit("(", 1)[1].rstrip(")") if every.endswith(")") else every))
    assert sorted(shown) == sorted(expected)
    # Both monitoring pulls of metrics into the tables the pages read (the review found them missing).
    assert ("`monitoring.tasks.metrics_pull`", "1 min") in shown
    assert ("`monitoring.tasks.metrics_rollup`", "1 h") in shown


def test_the_interval_is_written_as_the_guide_writes_it() -> None:
    assert [interval(s) for s in (30.0, 60.0, 120.0, 300.0, 3600.0, 86400.0, 90.0)] == [
        "30 s",
        "1 min",
        "2 min",
        "5 min",
        "1 h",
        "1 day",
        "90 s",
    ]
