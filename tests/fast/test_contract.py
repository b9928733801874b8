"""The committed stubs are what the .proto generates; client and server share one copy."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_committed_stubs_are_up_to_date(tmp_path: Path):
    subprocess.run(
        [str(ROOT / "scripts" / "gen_proto.sh"), str(tmp_path)],
        check=True,
        cwd=ROOT,
        env={**os.environ, "PYTHON": sys.executable},
    )
    for name in ("sentiment_pb2.py", "sentiment_pb2.pyi", "sentiment_pb2_grpc.py"):
        generated = (tmp_path / "sentiment" / "v1" / name).read_text()
        committed = (ROOT / "client" / "sentiment" / "v1" / name).read_text()
        assert generated == committed, f"{name} is stale: run `make proto`"


def test_server_imports_the_clients_stubs():
    import sentiment.v1.sentiment_pb2 as pb
    import sentiment_server.transport.servicer as servicer

    assert vars(servicer)["pb"] is pb
    assert Path(pb.__file__).resolve().is_relative_to(ROOT / "client")
