"""Unit tests for sentiment_client against an in-process fake gRPC server (no model, no Triton)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from sentiment.v1 import sentiment_pb2 as pb
from sentiment.v1 import sentiment_pb2_grpc as pb_grpc
from sentiment_client import (
    AsyncSentimentClient,
    ClassifyResult,
    ClientOptions,
    LabelScore,
    ModelInfo,
    SentimentClient,
    SentimentError,
    TokenizedText,
)
from sentiment_client.cli import DEMO_NOTE, main
from sentiment_client.retry import backoff_s

LABELS = ("NEGATIVE", "POSITIVE")


def _classification(text: str) -> pb.Classification:
    positive = "love" in text
    best, other = (1, 0) if positive else (0, 1)
    return pb.Classification(
        label=LABELS[best],
        score=0.75,
        scores=[
            pb.LabelScore(label=LABELS[best], score=0.75, label_id=best),
            pb.LabelScore(label=LABELS[other], score=0.25, label_id=other),
        ],
        logits=[-1.0, 1.0] if positive else [1.0, -1.0],
        num_tokens=len(text.split()) + 2,
    )


def _classify_response(request: pb.ClassifyRequest, request_id: str) -> pb.ClassifyResponse:
    return pb.ClassifyResponse(
        results=[_classification(t) for t in request.texts],
        model_name="fake",
        model_version="1",
        request_id=request_id,
        timings=pb.Timings(tokenize_us=1, queue_us=2, inference_us=3, total_us=6),
    )


@dataclass
class FakeServicer(pb_grpc.SentimentServiceServicer):
    """Classify fails UNAVAILABLE `fail_first` times (every time if negative), then succeeds."""

    fail_first: int = 0
    fail_code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE
    calls: int = 0
    metadata: list[dict[str, str]] = field(default_factory=list)

    def _record(self, context: grpc.ServicerContext) -> str:
        self.calls += 1
        self.metadata.append({k: str(v) for k, v in context.invocation_metadata()})
        request_id = f"req-{self.calls}"
        context.set_trailing_metadata((("x-request-id", request_id),))
        if self.fail_first < 0 or self.calls <= self.fail_first:
            context.abort(self.fail_code, "try again later")
        return request_id

    def Classify(self, request: pb.ClassifyRequest, context: grpc.ServicerContext) -> pb.ClassifyResponse:
        return _classify_response(request, self._record(context))

    def ClassifyStream(
        self, request_iterator: Iterator[pb.ClassifyStreamRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.ClassifyStreamResponse]:
        for item in request_iterator:
            response = _classify_response(item.request, f"stream-{item.correlation_id}")
            yield pb.ClassifyStreamResponse(response=response, correlation_id=item.correlation_id)

    def Tokenize(self, request: pb.TokenizeRequest, context: grpc.ServicerContext) -> pb.TokenizeResponse:
        self._record(context)
        results = [
            pb.TokenizedText(
                input_ids=[101, *range(1, len(t.split()) + 1), 102],
                attention_mask=[1] * (len(t.split()) + 2),
                tokens=["[CLS]", *t.split(), "[SEP]"],
            )
            for t in request.texts
        ]
        return pb.TokenizeResponse(results=results)

    def GetModelInfo(self, request: pb.GetModelInfoRequest, context: grpc.ServicerContext) -> pb.GetModelInfoResponse:
        return pb.GetModelInfoResponse(
            model_name="fake",
            model_version="1",
            labels=LABELS,
            max_sequence_length=512,
            problem_type=pb.PROBLEM_TYPE_SINGLE_LABEL_CLASSIFICATION,
            backend="python",
            dtype="fp32",
            demo=True,
        )


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("TARGET", "TIMEOUT", "API_KEY", "TLS", "TLS_CA", "TLS_CERT", "TLS_KEY"):
        monkeypatch.delenv(f"SENTIMENT_{name}", raising=False)


@pytest.fixture
def fake() -> FakeServicer:
    return FakeServicer()


@contextlib.contextmanager
def _serve(fake: FakeServicer, credentials: grpc.ServerCredentials | None = None) -> Iterator[str]:
    """Run `fake` plus a Health service on 127.0.0.1 (TLS when `credentials` is given)."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_SentimentServiceServicer_to_server(fake, server)
    health_servicer = health.HealthServicer()
    health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    health_servicer.set("down", health_pb2.HealthCheckResponse.NOT_SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if credentials is None:
        port = server.add_insecure_port("127.0.0.1:0")
    else:
        port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None).wait()


@pytest.fixture
def target(fake: FakeServicer) -> Iterator[str]:
    with _serve(fake) as address:
        yield address


def _options(target: str, *, api_key: str | None = None, max_attempts: int = 3) -> ClientOptions:
    """Fast retries for tests."""
    return ClientOptions(
        target=target, api_key=api_key, max_attempts=max_attempts, initial_backoff_s=0.01, max_backoff_s=0.05
    )


# --- conversion --------------------------------------------------------------------------


def test_classify_result_from_proto() -> None:
    request = pb.ClassifyRequest(texts=["I love it", "meh"])
    result = ClassifyResult.from_proto(_classify_response(request, "r1"))
    first = result.results[0]
    assert (first.label, first.score, first.num_tokens, first.truncated) == ("POSITIVE", 0.75, 5, False)
    assert first.scores == (LabelScore("POSITIVE", 0.75, 1), LabelScore("NEGATIVE", 0.25, 0))
    assert first.logits == (-1.0, 1.0)
    assert result.results[1].label == "NEGATIVE"
    assert (result.model_name, result.model_version, result.request_id) == ("fake", "1", "r1")
    assert (result.timings.tokenize_us, result.timings.total_us) == (1, 6)


def test_tokenized_text_and_model_info_from_proto() -> None:
    msg = pb.TokenizedText(input_ids=[101, 7, 102], attention_mask=[1, 1, 1], tokens=["[CLS]", "x", "[SEP]"])
    assert TokenizedText.from_proto(msg) == TokenizedText((101, 7, 102), (1, 1, 1), ("[CLS]", "x", "[SEP]"), False)
    info = ModelInfo.from_proto(
        pb.GetModelInfoResponse(labels=["a", "b"], problem_type=pb.PROBLEM_TYPE_MULTI_LABEL_CLASSIFICATION)
    )
    assert info.labels == ("a", "b")
    assert info.problem_type == "multi_label_classification"
    assert ModelInfo.from_proto(pb.GetModelInfoResponse()).problem_type == "unspecified"


def test_options_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ClientOptions().target == "127.0.0.1:50051"
    monkeypatch.setenv("SENTIMENT_TARGET", "example:1")
    monkeypatch.setenv("SENTIMENT_TIMEOUT", "2.5")
    monkeypatch.setenv("SENTIMENT_API_KEY", "k")
    monkeypatch.setenv("SENTIMENT_CLIENT_TLS_CA", "/ca.pem")
    options = ClientOptions()
    assert (options.target, options.timeout_s, options.use_tls) == ("example:1", 2.5, True)
    assert options.metadata() == (("x-api-key", "k"),)
    with pytest.raises(ValueError, match="together"):
        ClientOptions(client_cert="c.pem")


def test_backoff_is_capped_exponential_with_jitter() -> None:
    options = ClientOptions(initial_backoff_s=0.05, max_backoff_s=1.0, backoff_multiplier=2.0)
    for attempt, ceiling in [(1, 0.05), (2, 0.1), (3, 0.2), (10, 1.0)]:
        delays = [backoff_s(attempt, options) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling / 2  # jittered, not always zero


# --- retries and deadlines against the fake server ---------------------------------------


def test_retries_unavailable_then_succeeds(fake: FakeServicer, target: str) -> None:
    fake.fail_first = 2
    with SentimentClient(options=_options(target)) as client:
        result = client.classify(["I love it"])
    assert fake.calls == 3
    assert result.results[0].label == "POSITIVE"
    assert result.request_id == "req-3"


def test_gives_up_after_max_attempts_with_request_id(fake: FakeServicer, target: str) -> None:
    fake.fail_first = -1
    with SentimentClient(options=_options(target, max_attempts=3)) as client, pytest.raises(SentimentError) as info:
        client.classify("I love it")
    assert fake.calls == 3
    assert info.value.code == grpc.StatusCode.UNAVAILABLE
    assert info.value.message == "try again later"
    assert info.value.request_id == "req-3"
    assert isinstance(info.value.__cause__, grpc.RpcError)


def test_does_not_retry_other_codes(fake: FakeServicer, target: str) -> None:
    fake.fail_first, fake.fail_code = 1, grpc.StatusCode.INVALID_ARGUMENT
    with SentimentClient(options=_options(target)) as client, pytest.raises(SentimentError) as info:
        client.classify("x")
    assert fake.calls == 1
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_retries_stop_at_the_deadline(fake: FakeServicer, target: str) -> None:
    fake.fail_first = -1
    options = ClientOptions(target=target, max_attempts=1000, initial_backoff_s=0.02, max_backoff_s=0.1)
    with SentimentClient(options=options) as client:
        start = time.monotonic()
        with pytest.raises(SentimentError) as info:
            client.classify("x", timeout=0.5)
        elapsed = time.monotonic() - start
    assert elapsed < 0.75
    assert 1 < fake.calls < 1000
    assert info.value.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def test_unreachable_server_raises_sentiment_error() -> None:
    with SentimentClient("127.0.0.1:1", options=_options("unused")) as client, pytest.raises(SentimentError) as info:
        client.model_info(timeout=1.0)
    assert info.value.code == grpc.StatusCode.UNAVAILABLE


# --- the other calls ---------------------------------------------------------------------


def test_api_key_reaches_the_server(fake: FakeServicer, target: str) -> None:
    with SentimentClient(options=_options(target, api_key="s3cret")) as client:
        client.classify("x")
        client.tokenize("y")
    assert [m.get("x-api-key") for m in fake.metadata] == ["s3cret", "s3cret"]


def test_sync_tokenize_info_health_and_stream(target: str) -> None:
    with SentimentClient(target) as client:
        tokens = client.tokenize(["a b"], pad=True)
        assert tokens[0].tokens == ("[CLS]", "a", "b", "[SEP]")
        assert client.model_info().demo is True
        assert client.health() == "SERVING"
        assert client.health("down") == "NOT_SERVING"
        results = list(client.classify_stream([["I love it"], ["meh", "love"]]))
    assert [r.request_id for r in results] == ["stream-0", "stream-1"]
    assert [c.label for c in results[1].results] == ["NEGATIVE", "POSITIVE"]


def test_async_client(fake: FakeServicer, target: str) -> None:
    fake.fail_first = 1

    async def run() -> None:
        async with AsyncSentimentClient(options=_options(target, api_key="k")) as client:
            result = await client.classify(["I love it"], top_k=1)
            assert result.results[0].label == "POSITIVE"
            assert fake.calls == 2
            assert (await client.model_info()).model_name == "fake"
            assert await client.health() == "SERVING"
            assert len(await client.tokenize("a b c")) == 1
            stream = [r.request_id async for r in client.classify_stream([["a"], "b", ["c", "d"]])]
            assert stream == ["stream-0", "stream-1", "stream-2"]
        fake.fail_first = -1
        async with AsyncSentimentClient(options=_options(target, max_attempts=2)) as client:
            with pytest.raises(SentimentError) as info:
                await client.classify("x")
            assert info.value.code == grpc.StatusCode.UNAVAILABLE

    asyncio.run(run())
    assert fake.metadata[0]["x-api-key"] == "k"


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_mutual_tls_with_server_name_override(fake: FakeServicer, tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    openssl = "openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=sentiment.test"
    openssl += " -addext subjectAltName=DNS:sentiment.test"
    subprocess.run([*openssl.split(), "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    pem = cert.read_bytes()
    credentials = grpc.ssl_server_credentials(
        [(key.read_bytes(), pem)], root_certificates=pem, require_client_auth=True
    )
    with _serve(fake, credentials) as address:
        options = ClientOptions(
            target=address,
            ca_cert=str(cert),
            client_cert=str(cert),
            client_key=str(key),
            server_name_override="sentiment.test",
        )
        assert options.use_tls
        with SentimentClient(options=options) as client:
            assert client.health() == "SERVING"
        insecure = ClientOptions(target=address, max_attempts=1)
        with SentimentClient(options=insecure) as client, pytest.raises(SentimentError):
            client.health(timeout=2)


# --- CLI ---------------------------------------------------------------------------------


def test_cli_classify_json(target: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--target", target, "classify", "--json", "--logits", "I love it", "meh"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [r["label"] for r in out["results"]] == ["POSITIVE", "NEGATIVE"]
    assert out["results"][0]["scores"][0] == {"label": "POSITIVE", "score": 0.75, "label_id": 1}
    assert out["results"][0]["logits"] == [-1.0, 1.0]
    assert out["timings"]["total_us"] == 6


def test_cli_classify_table_reads_stdin_and_notes_demo(
    target: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SENTIMENT_TARGET", target)
    monkeypatch.setattr("sys.stdin", io.StringIO("I love it\n\n" + "a very long text " * 5 + "\n"))
    assert main(["classify", "-"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["TEXT", "LABEL", "SCORE"]
    assert lines[1].split() == ["I", "love", "it", "POSITIVE", "0.7500"]
    assert lines[2].startswith("a very long text a very long text a v...  NEGATIVE")  # 40 chars
    assert lines[-1] == DEMO_NOTE


def test_cli_tokenize_and_info_json(target: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--target", target, "tokenize", "--json", "--pad", "a b"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["input_ids"] == [101, 1, 2, 102]
    assert main(["--target", target, "info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["labels"], info["demo"], info["problem_type"]) == (
        list(LABELS),
        True,
        "single_label_classification",
    )


def test_cli_health_exit_codes(target: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--target", target, "health"]) == 0
    assert main(["--target", target, "health", "--service", "down"]) == 1
    assert capsys.readouterr().out.split() == ["SERVING", "NOT_SERVING"]


def test_cli_error_exit_code_and_api_key(fake: FakeServicer, target: str, capsys: pytest.CaptureFixture[str]) -> None:
    fake.fail_first, fake.fail_code = -1, grpc.StatusCode.PERMISSION_DENIED
    assert main(["--target", target, "--api-key", "k2", "classify", "x"]) == 2
    captured = capsys.readouterr()
    assert captured.err == "error: PERMISSION_DENIED: try again later\n"
    assert captured.out == ""
    assert fake.metadata[0]["x-api-key"] == "k2"
