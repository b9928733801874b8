"""bench/layouts.py and the report's limit check: pure functions, no model, no torch."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))

import layouts
import report
from layouts import Job, Layout


@pytest.mark.parametrize(
    ("cores", "expected"),
    [
        (1, [(1, 1)]),
        (2, [(1, 2), (2, 1)]),
        (3, [(1, 3), (3, 1)]),
        (4, [(1, 4), (2, 2), (4, 1)]),
        (8, [(1, 8), (2, 4), (4, 2), (8, 1)]),
        (12, [(1, 12), (2, 6), (3, 4), (4, 3), (6, 2), (12, 1)]),
    ],
)
def test_layouts_cover_the_cores(cores: int, expected: list[tuple[int, int]]) -> None:
    found = layouts.layouts(cores)
    assert [(x.procs, x.threads) for x in found] == expected
    assert all(x.procs * x.threads == cores for x in found)
    assert found[0] == Layout(1, cores) and found[-1] == Layout(cores, 1)  # both ends, always


def test_layouts_refuse_no_cores() -> None:
    with pytest.raises(ValueError):
        layouts.layouts(0)


def test_layout_names() -> None:
    assert str(Layout(2, 1)) == "2 procs x 1 thread"
    assert str(Layout(1, 2)) == "1 proc x 2 threads"
    assert Layout(2, 1).key == "2x1"


def test_shares_are_round_robin_and_cover_every_batch_once() -> None:
    shares = [layouts.share(7, 3, i) for i in range(3)]
    assert shares == [[0, 3, 6], [1, 4], [2, 5]]
    assert sorted(b for s in shares for b in s) == list(range(7))
    assert layouts.share(2, 4, 3) == []  # more processes than batches: one idles


def test_job_batches_and_padding() -> None:
    job = Job([[1] * 2, [1] * 2, [1] * 3, [1] * 5, [1] * 5], size=2, min_s=0.0)
    assert job.batches == 3
    # batches pad to 2, 5, 5 tokens: 2*2 + 2*5 + 1*5 = 19 tokens run, 17 real
    assert job.padding() == pytest.approx(1 - 17 / 19)


def test_a_planned_job_cuts_the_planners_sizes() -> None:
    import inprocess

    texts = [[1] * 2, [1] * 2, [1] * 3, [1] * 5, [1] * 5]
    job = Job(texts, size=0, min_s=0.0, planned=(3, 2))
    assert job.batches == 2
    assert [len(job.chunk(b)) for b in range(2)] == [3, 2]
    assert job.padding() == pytest.approx(1 - 17 / 19)  # pads to 3 and 5: 3*3 + 2*5 = 19 tokens run
    # The limit's planned candidate: the service's planner on the same sorted texts.
    short_and_long = [[1] * 10] * 4 + [[1] * 200] * 4
    assert inprocess.planned_batches(short_and_long) == (4, 4)


def _row(path: str, ratio: float, dtype: str = "int8") -> report.Row:
    return report.Row(path, "short", 64, 1, 100.0, 1.0, 2.0, 3.0, ratio_to_limit=ratio, dtype=dtype)


def test_rows_above_the_limit_are_flagged() -> None:
    rows = [_row("limit", 1.0), _row("service_unary", 1.06), _row("service_batch", 1.02), _row("triton_direct", 1.1)]
    assert [report.above_limit(r) for r in rows] == [False, True, False, True]
    text = report.summary(rows, "int8")
    assert "every service row at most 1.02 x the limit of its dtype (the limit is an upper bound): NOT met" in text
    assert "unary c64x1 1.06 **ABOVE**" in text
    assert "batch c64x1 1.02," not in text and "batch c64x1 1.02" in text
    assert "**1.06 above the limit**" in report.table(rows)


def test_rows_within_the_limit_pass() -> None:
    text = report.summary([_row("limit", 1.0), _row("service_unary", 0.9)], "int8")
    assert "(the limit is an upper bound): met" in text
    assert "int8: unary c64x1 0.90" in text


def test_timed_batches_run_whole_passes() -> None:
    import load

    ran: list[int] = []

    def run(batch: int) -> int:
        ran.append(batch)
        return batch + 1  # batch b holds b + 1 texts

    m = load.timed_batches(run, 3, min_s=0.0)
    assert ran == [0, 1, 2] and m.sentences == 6 and m.calls == 3
    ran.clear()
    m = load.timed_batches(run, 3, min_s=0.01)  # past the first pass: always a whole number of passes
    assert len(ran) % 3 == 0 and len(ran) >= 3
    assert m.sentences == 6 * len(ran) // 3


def test_the_limits_processes_start_with_the_stubs_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    from sentiment_server.backend.triton_process import model_process_environment

    monkeypatch.setenv("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "3")  # an operator's value wins, as for Triton
    before = dict(os.environ)
    wanted = model_process_environment(before)
    assert wanted["ONEDNN_PRIMITIVE_CACHE_CAPACITY"] == "3"
    with layouts._model_environment():
        assert {name: os.environ[name] for name in wanted} == wanted
    assert dict(os.environ) == before
