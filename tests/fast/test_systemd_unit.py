"""The shipped systemd unit, read statically (no systemd here): it runs `up` and lets systemd restart a give-up."""

from __future__ import annotations

import configparser
from pathlib import Path

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "systemd" / "sentiment.service"


def test_the_unit_runs_up_and_restarts_it_when_it_gives_up() -> None:
    unit = configparser.ConfigParser(strict=False, interpolation=None)
    unit.optionxform = str  # type: ignore[assignment,method-assign]  # systemd keys are case-sensitive
    unit.read_string(UNIT.read_text())
    service = unit["Service"]
    assert service["ExecStart"].split()[-1] == "up"
    assert service["Restart"] == "on-failure"  # `up` exits 1 once its crash budget is spent
    assert service["KillMode"] == "mixed"  # SIGTERM to the front-end only: it drains, then stops its Triton
    assert int(service["TimeoutStopSec"]) > 10  # more than the default drain (SENTIMENT_GRACE_S)
    assert unit["Install"]["WantedBy"] == "multi-user.target"
