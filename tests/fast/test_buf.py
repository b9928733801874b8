"""The contract's buf checks: lint, breaking (against the released contract), generation config."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BUF = ROOT / "node_modules" / ".bin" / "buf"
CHECK = ROOT / "scripts" / "check_buf.sh"
PROTO = ROOT / "proto"


@pytest.fixture(scope="module", autouse=True)
def buf() -> None:
    if not BUF.exists():
        if shutil.which("npm") is None:
            pytest.skip("npm is not installed, so neither is @bufbuild/buf")
        pytest.fail("node_modules/.bin/buf is missing: run `npm install` (scripts/bootstrap.sh does)")


def check(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(CHECK), *args], capture_output=True, text=True, timeout=120, env={**os.environ, **env})


def test_lint_and_breaking_pass() -> None:
    result = check()
    assert result.returncode == 0, result.stdout + result.stderr
    assert "lint and breaking OK" in result.stdout


def test_a_breaking_change_is_caught(tmp_path: Path) -> None:
    changed = tmp_path / "proto"
    shutil.copytree(PROTO, changed)
    contract = changed / "sentiment" / "v1" / "sentiment.proto"
    text = contract.read_text()
    assert "uint32 top_k = 2;" in text
    contract.write_text(text.replace("uint32 top_k = 2;", "string top_k = 2;"))
    result = check(str(changed))
    assert result.returncode != 0
    assert 'name "top_k" on message "ClassifyRequest" changed type' in result.stdout + result.stderr


def test_a_lint_error_is_caught(tmp_path: Path) -> None:
    changed = tmp_path / "proto"
    shutil.copytree(PROTO, changed)
    contract = changed / "sentiment" / "v1" / "sentiment.proto"
    contract.write_text(contract.read_text() + "\nmessage bad_name {}\n")
    result = check(str(changed))
    assert result.returncode != 0
    assert "bad_name" in result.stdout + result.stderr


def test_released_contract_is_a_buf_image() -> None:
    image = json.loads((PROTO / "released" / "sentiment.v1.json").read_text())
    assert [f["name"] for f in image["file"]] == ["sentiment/v1/sentiment.proto"]


def test_buf_gen_yaml_covers_go_java_typescript(tmp_path: Path) -> None:
    config = yaml.safe_load((PROTO / "buf.gen.yaml").read_text())
    assert config["version"] == "v2"
    plugins = config["plugins"]
    outs = {p["out"] for p in plugins}
    assert outs == {"../gen/go", "../gen/java", "../gen/ts"}
    remote = [p["remote"] for p in plugins if "remote" in p]
    assert all(":v" in r for r in remote), f"pin remote plugin versions: {remote}"
    # The local plugins run here (the remote ones need the Buf Schema Registry).
    local = [{**p, "out": str(tmp_path / Path(p["out"]).name)} for p in plugins if "local" in p]
    assert local, "the TypeScript plugin should run offline"
    env = {**os.environ, "PATH": os.pathsep.join([str(BUF.parent), os.environ.get("PATH", "")])}
    template = json.dumps({"version": "v2", "plugins": local})
    result = subprocess.run(
        [str(BUF), "generate", "--template", template], cwd=PROTO, capture_output=True, text=True, env=env, timeout=120
    )
    assert result.returncode == 0, result.stderr
    generated = (tmp_path / "ts" / "sentiment" / "v1" / "sentiment_pb.ts").read_text()
    assert "export const SentimentService" in generated
