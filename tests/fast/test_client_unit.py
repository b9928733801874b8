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
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from sentiment.v1 import sentiment_pb2 as pb
from sentiment.v1 import sentiment_pb2_grpc as pb_grpc
from sentiment_client import (
    AsyncSentimentClient,
    Classification,
    ClassifyResult,
    ClientOptions,
    LabelScore,
    ModelInfo,
    ModelList,
    ModelSummary,
    SentimentClient,
    SentimentError,
    TokenizedText,
    WindowResult,
)
from sentiment_client.cli import DEMO_NOTE, main
from sentiment_client.retry import backoff_s

LABELS = ("NEGATIVE", "POSITIVE")
TOPICS = ("sports", "politics")
MODELS = pb.ListModelsResponse(
    models=[
        pb.ModelSummary(name="fake", model_version="1", labels=LABELS, source_checkpoint="fake-ckpt", ready=True),
        pb.ModelSummary(name="topics", model_version="3", labels=TOPICS, source_checkpoint="/ckpt/topics"),
    ],
    default_model="fake",
)


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


def _windowed(classification: pb.Classification, request: pb.ClassifyRequest) -> pb.Classification:
    """With WINDOW: two windows, listed when asked for."""
    if request.truncation.strategy == pb.TRUNCATION_STRATEGY_WINDOW:
        classification.num_windows = 2
        if request.return_windows:
            classification.windows.extend(
                pb.WindowResult(scores=classification.scores, start_token=start, end_token=start + 6, num_tokens=8)
                for start in (0, 4)
            )
    else:
        classification.num_windows = 1
    return classification


def _classify_response(request: pb.ClassifyRequest, request_id: str) -> pb.ClassifyResponse:
    inputs = [*request.texts, *(f"{p.text} {p.text_pair}" for p in request.pairs)]
    return pb.ClassifyResponse(
        results=[_windowed(_classification(t), request) for t in inputs],
        model_name="fake",
        model_version="1",
        request_id=request_id,
        timings=pb.Timings(tokenize_us=1, queue_us=2, inference_us=3, total_us=6),
    )


def _tokenized(words: list[str], pair: list[str] | None = None, type_ids: list[int] | None = None) -> pb.TokenizedText:
    tokens = ["[CLS]", *words, "[SEP]", *([*pair, "[SEP]"] if pair else [])]
    ids = [101 if t == "[CLS]" else 102 if t == "[SEP]" else i for i, t in enumerate(tokens)]
    return pb.TokenizedText(input_ids=ids, attention_mask=[1] * len(ids), tokens=tokens, token_type_ids=type_ids)


@dataclass
class FakeServicer(pb_grpc.SentimentServiceServicer):
    """Classify fails UNAVAILABLE `fail_first` times (every time if negative), then succeeds.

    A request naming a model that `MODELS` does not list fails NOT_FOUND, as the server's do.
    """

    fail_first: int = 0
    fail_code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE
    calls: int = 0
    metadata: list[dict[str, str]] = field(default_factory=list)
    requests: list[pb.ClassifyRequest | pb.TokenizeRequest] = field(default_factory=list)
    info_requests: list[pb.GetModelInfoRequest] = field(default_factory=list)

    @staticmethod
    def _check_model(model: str, context: grpc.ServicerContext) -> None:
        if model and model not in {m.name for m in MODELS.models}:
            context.abort(grpc.StatusCode.NOT_FOUND, f"no model named {model!r}")

    def _record(self, context: grpc.ServicerContext) -> str:
        self.calls += 1
        self.metadata.append({k: str(v) for k, v in context.invocation_metadata()})
        request_id = f"req-{self.calls}"
        context.set_trailing_metadata((("x-request-id", request_id),))
        if self.fail_first < 0 or self.calls <= self.fail_first:
            context.abort(self.fail_code, "try again later")
        return request_id

    def Classify(self, request: pb.ClassifyRequest, context: grpc.ServicerContext) -> pb.ClassifyResponse:
        self.requests.append(request)
        self._check_model(request.model, context)
        return _classify_response(request, self._record(context))

    def ClassifyStream(
        self, request_iterator: Iterator[pb.ClassifyStreamRequest], context: grpc.ServicerContext
    ) -> Iterator[pb.ClassifyStreamResponse]:
        for item in request_iterator:
            self.requests.append(item.request)
            self._check_model(item.request.model, context)
            response = _classify_response(item.request, f"stream-{item.correlation_id}")
            yield pb.ClassifyStreamResponse(response=response, correlation_id=item.correlation_id)

    def Tokenize(self, request: pb.TokenizeRequest, context: grpc.ServicerContext) -> pb.TokenizeResponse:
        self.requests.append(request)
        self._check_model(request.model, context)
        self._record(context)
        results = [_tokenized(t.split()) for t in request.texts]
        for p in request.pairs:  # segment ids as a model that takes them gets them
            first, second = p.text.split(), p.text_pair.split()
            results.append(_tokenized(first, second, [0] * (len(first) + 2) + [1] * (len(second) + 1)))
        if request.truncation.strategy == pb.TRUNCATION_STRATEGY_WINDOW:
            for result in results:
                result.overflowing.append(_tokenized(["window", "two"]))
        return pb.TokenizeResponse(results=results)

    def GetModelInfo(self, request: pb.GetModelInfoRequest, context: grpc.ServicerContext) -> pb.GetModelInfoResponse:
        self.info_requests.append(request)
        self._check_model(request.model, context)
        return pb.GetModelInfoResponse(
            model_name=request.model or MODELS.default_model,
            model_version="1",
            labels=LABELS,
            max_sequence_length=512,
            problem_type=pb.PROBLEM_TYPE_SINGLE_LABEL_CLASSIFICATION,
            backend="python",
            dtype="fp32",
            demo=True,
        )

    def ListModels(self, request: pb.ListModelsRequest, context: grpc.ServicerContext) -> pb.ListModelsResponse:
        return MODELS


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


def test_windows_and_pairs_results_from_proto() -> None:
    scores = [
        pb.LabelScore(label="POSITIVE", score=0.75, label_id=1),
        pb.LabelScore(label="NEGATIVE", score=0.25, label_id=0),
    ]
    windows = [
        pb.WindowResult(scores=scores, start_token=0, end_token=14, num_tokens=16),
        pb.WindowResult(scores=scores[::-1], start_token=11, end_token=20, num_tokens=11),
    ]
    msg = pb.Classification(label="POSITIVE", score=0.75, scores=scores, num_tokens=16, num_windows=2, windows=windows)
    c = ClassifyResult.from_proto(pb.ClassifyResponse(results=[msg])).results[0]
    assert (c.num_windows, c.truncated, len(c.windows)) == (2, False, 2)
    assert c.windows[0] == WindowResult(
        (LabelScore("POSITIVE", 0.75, 1), LabelScore("NEGATIVE", 0.25, 0)), start_token=0, end_token=14, num_tokens=16
    )
    assert (c.windows[1].label, c.windows[1].start_token, c.windows[1].end_token) == ("NEGATIVE", 11, 20)
    assert c.windows[1].score == 0.25
    plain = Classification.from_proto(pb.Classification(label="x", num_windows=1))
    assert (plain.num_windows, plain.windows) == (1, ())

    first = pb.TokenizedText(input_ids=[101, 7, 8, 102], attention_mask=[1] * 4, tokens=["[CLS]", "a", "b", "[SEP]"])
    first.token_type_ids.extend([0, 0, 1, 1])
    first.overflowing.add(input_ids=[101, 8, 102], attention_mask=[1] * 3, tokens=["[CLS]", "b", "[SEP]"])
    tokenized = TokenizedText.from_proto(first)
    assert tokenized.token_type_ids == (0, 0, 1, 1)
    assert tokenized.overflowing == (TokenizedText((101, 8, 102), (1, 1, 1), ("[CLS]", "b", "[SEP]"), False),)
    assert tokenized.overflowing[0].overflowing == () and tokenized.overflowing[0].token_type_ids == ()

    info = ModelInfo.from_proto(pb.GetModelInfoResponse(inputs=["input_ids", "attention_mask", "token_type_ids"]))
    assert info.inputs == ("input_ids", "attention_mask", "token_type_ids")
    assert ModelInfo.from_proto(pb.GetModelInfoResponse()).inputs == ()


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


# --- windows and pairs: the requests the client sends -------------------------------------

WINDOW = pb.TRUNCATION_STRATEGY_WINDOW


def _truncation_fields(options: pb.TruncationOptions) -> tuple[int, int, int | None, int]:
    """(strategy, max_length, stride or None when unset, aggregation)."""
    stride = options.stride if options.HasField("stride") else None
    return options.strategy, options.max_length, stride, options.aggregation


def test_todays_calls_send_no_window_fields(fake: FakeServicer, target: str) -> None:
    with SentimentClient(target) as client:
        client.classify(["a"], max_length=8)
        client.tokenize("b", pad=True)
    classify, tokenize = fake.requests
    assert isinstance(classify, pb.ClassifyRequest) and isinstance(tokenize, pb.TokenizeRequest)
    assert _truncation_fields(classify.truncation) == (pb.TRUNCATION_STRATEGY_TRUNCATE, 8, None, 0)
    assert (list(classify.pairs), classify.return_windows) == ([], False)
    assert _truncation_fields(tokenize.truncation) == (pb.TRUNCATION_STRATEGY_TRUNCATE, 0, None, 0)
    assert list(tokenize.pairs) == []


@pytest.mark.parametrize(
    ("stride", "aggregation", "want_stride", "want_aggregation"),
    [
        (None, None, None, pb.WINDOW_AGGREGATION_UNSPECIFIED),  # unset: the server's defaults
        (0, "mean", 0, pb.WINDOW_AGGREGATION_MEAN),  # 0 is sent, not dropped
        (7, "mean_logits", 7, pb.WINDOW_AGGREGATION_MEAN_LOGITS),
        (3, "max", 3, pb.WINDOW_AGGREGATION_MAX),
    ],
)
def test_window_options_reach_the_request(
    fake: FakeServicer,
    target: str,
    stride: int | None,
    aggregation: Any,
    want_stride: int | None,
    want_aggregation: int,
) -> None:
    with SentimentClient(target) as client:
        result = client.classify(
            ["I love it"],
            truncation="window",
            max_length=16,
            stride=stride,
            aggregation=aggregation,
            return_windows=True,
        )
    (request,) = fake.requests
    assert isinstance(request, pb.ClassifyRequest)
    assert _truncation_fields(request.truncation) == (WINDOW, 16, want_stride, want_aggregation)
    assert request.return_windows is True and list(request.texts) == ["I love it"]
    assert result.results[0].num_windows == 2
    assert [(w.start_token, w.end_token, w.num_tokens) for w in result.results[0].windows] == [(0, 6, 8), (4, 10, 8)]


def test_pairs_and_windowed_tokenize_requests(fake: FakeServicer, target: str) -> None:
    pairs = [("A man eats.", "Someone eats."), ("a", "b")]
    with SentimentClient(target) as client:
        result = client.classify_pairs(pairs, top_k=1, return_logits=True, max_length=32, truncation="reject")
        assert [c.label for c in result.results] == ["NEGATIVE", "NEGATIVE"]
        pair_tokens = client.tokenize_pairs([("a b", "c")], pad=True, max_length=9)
        windows = client.tokenize(["x y"], truncation="window", max_length=12, stride=0)
        with pytest.raises(TypeError, match="pair"):
            client.classify_pairs(["ab", "cd"])  # type: ignore[list-item]  # strings, not pairs
    classify, tokenize_pairs, tokenize = fake.requests
    assert isinstance(classify, pb.ClassifyRequest)
    assert [(p.text, p.text_pair) for p in classify.pairs] == pairs and list(classify.texts) == []
    assert (classify.top_k, classify.return_logits, classify.return_windows) == (1, True, False)
    assert _truncation_fields(classify.truncation) == (pb.TRUNCATION_STRATEGY_REJECT, 32, None, 0)
    assert isinstance(tokenize_pairs, pb.TokenizeRequest)
    assert [(p.text, p.text_pair) for p in tokenize_pairs.pairs] == [("a b", "c")] and tokenize_pairs.pad
    assert _truncation_fields(tokenize_pairs.truncation) == (pb.TRUNCATION_STRATEGY_TRUNCATE, 9, None, 0)
    assert pair_tokens[0].token_type_ids == (0, 0, 0, 0, 1, 1)
    assert isinstance(tokenize, pb.TokenizeRequest)
    assert _truncation_fields(tokenize.truncation) == (WINDOW, 12, 0, 0)
    assert [t.tokens for t in windows[0].overflowing] == [("[CLS]", "window", "two", "[SEP]")]


def test_stream_and_async_send_the_same_requests(fake: FakeServicer, target: str) -> None:
    window = {"truncation": "window", "max_length": 16, "stride": 0, "aggregation": "max", "return_windows": True}
    with SentimentClient(target) as client:
        list(client.classify_stream([["a"], ["b"]], **window))  # type: ignore[arg-type]

    async def run() -> None:
        async with AsyncSentimentClient(target) as client:
            await client.classify(["a"], **window)  # type: ignore[arg-type]
            async_stream = [r async for r in client.classify_stream([["a"]], **window)]  # type: ignore[arg-type]
            assert len(async_stream) == 1
            await client.classify_pairs([("a", "b")], truncation="reject")
            await client.tokenize("a", truncation="window", stride=2)
            tokens = await client.tokenize_pairs([("a", "b")], max_length=5)
            assert tokens[0].token_type_ids == (0, 0, 0, 1, 1)

    asyncio.run(run())
    *windowed, pairs, tokenize, tokenize_pairs = fake.requests
    assert len(windowed) == 4
    for request in windowed:
        assert isinstance(request, pb.ClassifyRequest)
        assert _truncation_fields(request.truncation) == (WINDOW, 16, 0, pb.WINDOW_AGGREGATION_MAX)
        assert request.return_windows
    assert isinstance(pairs, pb.ClassifyRequest)
    assert [(p.text, p.text_pair) for p in pairs.pairs] == [("a", "b")]
    assert pairs.truncation.strategy == pb.TRUNCATION_STRATEGY_REJECT
    assert _truncation_fields(tokenize.truncation) == (WINDOW, 0, 2, 0)
    assert isinstance(tokenize_pairs, pb.TokenizeRequest)
    assert [(p.text, p.text_pair) for p in tokenize_pairs.pairs] == [("a", "b")]


# --- models: `model` on every call, ListModels --------------------------------------------


def test_model_list_from_proto() -> None:
    models = ModelList.from_proto(MODELS)
    assert models.default_model == "fake" and models.names == ("fake", "topics")
    assert models.models[1] == ModelSummary(
        name="topics", model_version="3", labels=TOPICS, source_checkpoint="/ckpt/topics", ready=False
    )
    assert models.models[0].ready is True and models.models[0].labels == LABELS
    assert ModelList.from_proto(pb.ListModelsResponse()) == ModelList(models=(), default_model="")


def _models_sent(fake: FakeServicer) -> list[str]:
    return [r.model for r in fake.requests]


def test_model_reaches_every_request(fake: FakeServicer, target: str) -> None:
    with SentimentClient(target) as client:
        client.classify(["a"])  # no model: "" on the wire, the server's default
        assert client.classify(["a"], model="topics", truncation="window").results[0].num_windows == 2
        client.classify_pairs([("a", "b")], model="topics")
        list(client.classify_stream([["a"], ["b"]], model="topics"))
        client.tokenize("a", model="topics")
        client.tokenize_pairs([("a", "b")], model="topics")
        assert client.model_info().model_name == "fake"
        assert client.model_info(model="topics").model_name == "topics"
        assert client.list_models() == ModelList.from_proto(MODELS)
    assert _models_sent(fake) == ["", *["topics"] * 6]
    assert [type(r) for r in fake.requests[-2:]] == [pb.TokenizeRequest, pb.TokenizeRequest]
    assert [r.model for r in fake.info_requests] == ["", "topics"]


def test_async_model_reaches_every_request(fake: FakeServicer, target: str) -> None:
    async def run() -> ModelList:
        async with AsyncSentimentClient(target) as client:
            await client.classify(["a"], model="topics")
            await client.classify_pairs([("a", "b")], model="topics")
            assert len([r async for r in client.classify_stream([["a"], ["b"]], model="topics")]) == 2
            await client.tokenize("a", model="topics", truncation="window")
            await client.tokenize_pairs([("a", "b")], model="topics")
            await client.tokenize("a")
            assert (await client.model_info(model="topics")).model_name == "topics"
            return await client.list_models()

    models = asyncio.run(run())
    assert _models_sent(fake) == [*["topics"] * 6, ""]
    assert [r.model for r in fake.info_requests] == ["topics"]
    assert models.names == ("fake", "topics") and models.default_model == "fake"


def test_unknown_model_is_not_found_and_not_retried(fake: FakeServicer, target: str) -> None:
    with SentimentClient(options=_options(target)) as client:
        for call in (
            lambda: client.classify(["a"], model="nope"),
            lambda: client.tokenize("a", model="nope"),
            lambda: client.model_info(model="nope"),
        ):
            with pytest.raises(SentimentError) as info:
                call()
            assert info.value.code == grpc.StatusCode.NOT_FOUND
            assert "nope" in info.value.message
    assert _models_sent(fake) == ["nope", "nope"]  # one attempt each


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


def test_cli_window_flags_build_the_request(
    fake: FakeServicer, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--window", "--max-length", "16", "--stride", "0", "--aggregation", "mean_logits", "--return-windows"]
    assert main(["--target", target, "classify", *args, "I love it", "meh"]) == 0
    request = fake.requests[0]
    assert isinstance(request, pb.ClassifyRequest)
    assert _truncation_fields(request.truncation) == (WINDOW, 16, 0, pb.WINDOW_AGGREGATION_MEAN_LOGITS)
    assert request.return_windows and list(request.texts) == ["I love it", "meh"]
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["TEXT", "LABEL", "SCORE", "WINDOWS"]
    assert lines[1].split() == ["I", "love", "it", "POSITIVE", "0.7500", "2"]
    assert lines[2].split() == ["tokens", "0-6", "POSITIVE", "0.7500"]
    assert lines[3].split() == ["tokens", "4-10", "POSITIVE", "0.7500"]
    assert (
        lines[4].split() == ["meh", "NEGATIVE", "0.7500", "2"] and len(lines) == 8
    )  # meh and its windows, then the note

    assert main(["--target", target, "classify", "--json", "--window", "x"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert (out["results"][0]["num_windows"], out["results"][0]["windows"]) == (2, [])
    request = fake.requests[-1]
    assert isinstance(request, pb.ClassifyRequest)
    assert _truncation_fields(request.truncation) == (WINDOW, 0, None, pb.WINDOW_AGGREGATION_UNSPECIFIED)
    assert not request.return_windows


def test_cli_pairs(fake: FakeServicer, target: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--target", target, "classify", "I love it", "--pair", "so do I", "b", "--pair", "c"]) == 0
    request = fake.requests[0]
    assert isinstance(request, pb.ClassifyRequest)
    assert [(p.text, p.text_pair) for p in request.pairs] == [("I love it", "so do I"), ("b", "c")]
    assert list(request.texts) == [] and request.truncation.strategy == pb.TRUNCATION_STRATEGY_TRUNCATE
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["TEXT", "PAIR", "LABEL", "SCORE"]
    assert lines[1].split() == ["I", "love", "it", "so", "do", "I", "POSITIVE", "0.7500"]

    assert main(["--target", target, "tokenize", "--json", "a b", "--pair", "c"]) == 0
    (tokenized,) = json.loads(capsys.readouterr().out)
    assert tokenized["token_type_ids"] == [0, 0, 0, 0, 1, 1]
    assert main(["--target", target, "tokenize", "a b", "--pair", "c"]) == 0
    assert "  token_type_ids: 0 0 0 0 1 1" in capsys.readouterr().out.splitlines()


def test_cli_tokenize_window_prints_every_window(
    fake: FakeServicer, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--target", target, "tokenize", "--window", "--max-length", "8", "--stride", "2", "a b"]) == 0
    request = fake.requests[0]
    assert isinstance(request, pb.TokenizeRequest)
    assert _truncation_fields(request.truncation) == (WINDOW, 8, 2, 0)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "[0] window 1/2: 4 tokens"
    assert lines[3] == "[0] window 2/2: 4 tokens"
    assert lines[4] == "  tokens:         [CLS] window two [SEP]"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--stride", "4", "x"], "--stride need --window"),
        (["--aggregation", "max", "--return-windows", "x"], "--aggregation, --return-windows need --window"),
        (["--window", "x", "--pair", "y"], "--window is for single texts, not --pair"),
        (["a", "b", "--pair", "y"], "--pair given 1 times for 2 texts"),
        (["--window", "--stride", "-1", "x"], "must be 0 or more"),
        (["--window", "--aggregation", "median", "x"], "invalid choice: 'median'"),
    ],
)
def test_cli_refuses_bad_window_and_pair_flags(
    fake: FakeServicer, target: str, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--target", target, "classify", *args])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert fake.requests == []


def test_cli_model_flag_reaches_the_requests(
    fake: FakeServicer, target: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--target", target, "classify", "--model", "topics", "I love it"]) == 0
    assert main(["--target", target, "classify", "a", "--pair", "b", "--model", "topics"]) == 0
    assert main(["--target", target, "tokenize", "--model", "topics", "--json", "a b"]) == 0
    assert main(["--target", target, "tokenize", "a", "--pair", "b", "--model", "topics"]) == 0
    assert main(["--target", target, "classify", "--json", "x"]) == 0
    assert _models_sent(fake) == [*["topics"] * 4, ""]
    capsys.readouterr()
    assert main(["--target", target, "info", "--json", "--model", "topics"]) == 0
    assert json.loads(capsys.readouterr().out)["model_name"] == "topics"
    # The demo note after a table asks about the model that answered (two tables: two checks).
    assert [r.model for r in fake.info_requests] == ["topics", "topics", "topics"]


def test_cli_unknown_model_exits_2(fake: FakeServicer, target: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--target", target, "classify", "--model", "nope", "x"]) == 2
    assert capsys.readouterr().err == "error: NOT_FOUND: no model named 'nope'\n"
    assert main(["--target", target, "info", "--model", "nope"]) == 2
    assert capsys.readouterr().err.startswith("error: NOT_FOUND:")


def test_cli_models(target: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--target", target, "models", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["default_model"] == "fake"
    assert out["models"][1] == {
        "name": "topics",
        "model_version": "3",
        "labels": list(TOPICS),
        "source_checkpoint": "/ckpt/topics",
        "ready": False,
    }
    assert main(["--target", target, "models"]) == 0
    header, fake_row, topics_row = capsys.readouterr().out.splitlines()
    assert header.split() == ["NAME", "VERSION", "READY", "LABELS", "SOURCE"]
    assert fake_row.split() == ["*", "fake", "1", "yes", "NEGATIVE,POSITIVE", "fake-ckpt"]
    assert topics_row.split() == ["topics", "3", "no", "sports,politics", "/ckpt/topics"]
