"""Hostile and odd input against the in-process front-end: the right status code, never a crash.

The simple refusals (no texts, empty text, unknown strategy on Classify,
max_length too large, REJECT, too many texts) are in test_e2e_service.py;
this file covers the rest and then lets hypothesis loose on the request fields.
After every test the server must still classify, and nothing may have logged
an error or a traceback.
"""

from __future__ import annotations

import logging
import math
import sys
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from fake_backend import InProcessServer, fake_model, wait_until
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sentiment.v1 import sentiment_pb2 as pb
from sentiment.v1 import sentiment_pb2_grpc as pb_grpc

MODEL_MAX_LENGTH = 512
SPECIAL_TOKENS = 2  # [CLS] ... [SEP]
LABELS = ("NEGATIVE", "POSITIVE")
SERVICE = "/sentiment.v1.SentimentService/"
FORBIDDEN = {grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.UNAVAILABLE}


def _stub(channel: grpc.Channel) -> pb_grpc.SentimentServiceStub:
    return pb_grpc.SentimentServiceStub(channel)  # type: ignore[no-untyped-call]  # generated code


@pytest.fixture(scope="module")
def service() -> Iterator[InProcessServer]:
    with InProcessServer(model=fake_model(max_length=MODEL_MAX_LENGTH)) as started:
        yield started


@pytest.fixture(scope="module")
def channel(service: InProcessServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(service.target) as ch:
        yield ch


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> pb_grpc.SentimentServiceStub:
    return _stub(channel)


def _trouble(records: list[logging.LogRecord]) -> list[str]:
    """Log records that would put ERROR or a traceback into the server's log."""
    return [f"{r.levelname} {r.name}: {r.getMessage()}" for r in records if r.levelno >= logging.ERROR or r.exc_info]


@pytest.fixture(autouse=True)
def still_serving(
    service: InProcessServer,
    stub: pb_grpc.SentimentServiceStub,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> Iterator[None]:
    """After each test: the server runs, answers a normal call, and nothing logged an error or a traceback."""
    yield
    assert service.front is not None and service.loop.is_running()
    response = stub.Classify(pb.ClassifyRequest(texts=["I love this movie"]), timeout=10)
    assert response.results[0].label in LABELS
    records = [*caplog.get_records("setup"), *caplog.get_records("call"), *caplog.records]
    assert not _trouble(records), _trouble(records)
    out, err = capfd.readouterr()
    sys.stdout.write(out)
    sys.stderr.write(err)
    assert "Traceback" not in out + err, err[-3000:]


@pytest.fixture(scope="module")
def limited_service() -> Iterator[InProcessServer]:
    """A front-end with small limits: 100 characters per text, 10,000-byte messages."""
    model = fake_model(max_length=MODEL_MAX_LENGTH)
    with InProcessServer(model=model, max_chars_per_text=100, max_message_bytes=10000) as started:
        yield started


def _code(call: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[grpc.StatusCode, str, Any]:
    try:
        return grpc.StatusCode.OK, "", call(*args, **kwargs)
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or "", None


def _stream(
    stub: pb_grpc.SentimentServiceStub, *requests: pb.ClassifyRequest, timeout: float = 10
) -> list[pb.ClassifyStreamResponse]:
    messages = [pb.ClassifyStreamRequest(request=r, correlation_id=str(i)) for i, r in enumerate(requests)]
    return list(stub.ClassifyStream(iter(messages), timeout=timeout))


# --------------------------------------------------------------------------- odd but valid text


@pytest.mark.parametrize(
    "text",
    [
        "good\x00movie",
        "\x00leading and trailing nul\x00",
        "שלום עולם, זה סרט נהדר",  # Hebrew
        "هذا الفيلم رائع جدا",  # Arabic
        "\u202eevil override\u202c and \u200fmarks\u200e",  # bidi controls
        "👨\u200d👩\u200d👧\u200d👦 family, 🏳️\u200d🌈 flag, 🧑🏽\u200d💻 coder",  # emoji ZWJ sequences
        "\U0001f600" * 300,  # one [UNK] per emoji: truncated at 512 tokens
    ],
    ids=["nul-inside", "nul-edges", "hebrew", "arabic", "bidi-controls", "emoji-zwj", "many-emoji"],
)
def test_odd_text_is_classified(stub: pb_grpc.SentimentServiceStub, text: str) -> None:
    response = stub.Classify(pb.ClassifyRequest(texts=[text, "plain text"]), timeout=10)
    assert len(response.results) == 2
    result = response.results[0]
    assert result.label in LABELS
    assert SPECIAL_TOKENS < result.num_tokens <= MODEL_MAX_LENGTH
    assert math.isclose(sum(s.score for s in result.scores), 1.0, abs_tol=1e-5)
    # Tokenize agrees with what Classify counted, and no NUL survives into a token.
    tokenized = stub.Tokenize(pb.TokenizeRequest(texts=[text]), timeout=10).results[0]
    assert len(tokenized.input_ids) == result.num_tokens
    assert not any("\x00" in token for token in tokenized.tokens)


@pytest.mark.parametrize(
    "text",
    ["\u0301\u0301", "\x00", "\u200d\u200d", "\ufeff", "\x01\x02\x7f"],
    ids=["combining", "nul", "zwj", "bom", "ctl"],
)
def test_text_that_tokenizes_to_nothing_is_classified_like_the_pipeline(
    stub: pb_grpc.SentimentServiceStub, text: str
) -> None:
    """Not whitespace (str.strip keeps it), but the tokenizer drops every character: [CLS] [SEP] only.

    `pipeline("text-classification")` classifies such a text (the model sees two
    special tokens), and so does the service.
    """
    tokenized = stub.Tokenize(pb.TokenizeRequest(texts=[text]), timeout=10).results[0]
    assert list(tokenized.tokens) == ["[CLS]", "[SEP]"]
    response = stub.Classify(pb.ClassifyRequest(texts=[text]), timeout=10)
    assert response.results[0].num_tokens == SPECIAL_TOKENS
    assert response.results[0].label in LABELS


def test_top_k_larger_than_the_labels_returns_all_labels(stub: pb_grpc.SentimentServiceStub) -> None:
    response = stub.Classify(pb.ClassifyRequest(texts=["fine"], top_k=1_000_000), timeout=10)
    assert sorted(s.label for s in response.results[0].scores) == sorted(LABELS)


# --------------------------------------------------------------------------- limits


def test_text_over_the_character_limit(limited_service: InProcessServer) -> None:
    with grpc.insecure_channel(limited_service.target) as ch:
        stub = _stub(ch)
        assert stub.Classify(pb.ClassifyRequest(texts=["a" * 100]), timeout=10).results
        for call, request in (
            (stub.Classify, pb.ClassifyRequest(texts=["ok", "a" * 101])),
            (stub.Tokenize, pb.TokenizeRequest(texts=["ok", "é" * 101])),  # characters, not bytes
        ):
            code, details, _ = _code(call, request, timeout=10)
            assert code == grpc.StatusCode.INVALID_ARGUMENT
            assert "texts[1]" in details and "101 characters" in details and "limit is 100" in details
        code, details, _ = _code(_stream, stub, pb.ClassifyRequest(texts=["b" * 101]))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "limit is 100" in details


def test_message_over_the_size_limit(limited_service: InProcessServer) -> None:
    with grpc.insecure_channel(limited_service.target) as ch:
        stub = _stub(ch)
        big = pb.ClassifyRequest(texts=["word " * 19 + "word"] * 200)  # 100-char texts, about 20.4 kB
        assert big.ByteSize() > 20_000
        for call, request in (
            (stub.Classify, big),
            (stub.Tokenize, pb.TokenizeRequest(texts=big.texts)),
            (_stream, big),
        ):
            args = (stub, request) if call is _stream else (request,)
            code, details, _ = _code(call, *args, timeout=10)
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, details
        # Just under the limit is fine.
        small = pb.ClassifyRequest(texts=big.texts[:90])
        assert small.ByteSize() < 10_000
        assert len(stub.Classify(small, timeout=10).results) == 90
    assert limited_service.front is not None and limited_service.loop.is_running()


# --------------------------------------------------------------------------- bytes that do not parse


BAD_UTF8 = b"\x0a\x02\xff\xfe"  # field 1 (texts / request), 2 bytes that are not UTF-8


@pytest.mark.parametrize(
    "payload",
    [BAD_UTF8, b"\x0a\x05abc", b"\x0a\x01\xc3", b"\x12\x01"],
    ids=["invalid-utf8", "truncated-string", "cut-utf8-sequence", "truncated-field-2"],
)
@pytest.mark.parametrize("method", ["Classify", "Tokenize"])
def test_unparseable_bytes_are_invalid_argument(channel: grpc.Channel, method: str, payload: bytes) -> None:
    call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
        SERVICE + method, request_serializer=None, response_deserializer=None
    )
    code, details, _ = _code(call, payload, timeout=10)
    assert code == grpc.StatusCode.INVALID_ARGUMENT, details
    assert "UTF-8" in details or "protobuf" in details


def test_unparseable_stream_message_is_invalid_argument(channel: grpc.Channel) -> None:
    call: grpc.StreamStreamMultiCallable[bytes, bytes] = channel.stream_stream(
        SERVICE + "ClassifyStream", request_serializer=None, response_deserializer=None
    )
    good = pb.ClassifyStreamRequest(request=pb.ClassifyRequest(texts=["fine"]), correlation_id="0").SerializeToString()
    bad = b"\x0a" + bytes([len(BAD_UTF8)]) + BAD_UTF8  # request = ClassifyRequest{texts: [b"\xff\xfe"]}
    responses = call(iter([good, bad, good]), timeout=10)
    first = next(responses)
    assert pb.ClassifyStreamResponse.FromString(first).correlation_id == "0"
    with pytest.raises(grpc.RpcError) as info:
        list(responses)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "UTF-8" in (info.value.details() or "")
    # A stream that starts with the bad message.
    with pytest.raises(grpc.RpcError) as info:
        list(call(iter([bad]), timeout=10))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("failing", ["unparseable", "empty text"])
def test_a_failing_stream_message_waits_for_the_responses_ahead_of_it(
    service: InProcessServer, channel: grpc.Channel, failing: str
) -> None:
    """ClassifyStream's contract: the responses before the failing message have been sent.

    With a model that takes 50 ms, the first message is still being classified when the second one fails.
    """
    call: grpc.StreamStreamMultiCallable[bytes, bytes] = channel.stream_stream(
        SERVICE + "ClassifyStream", request_serializer=None, response_deserializer=None
    )
    good = pb.ClassifyStreamRequest(request=pb.ClassifyRequest(texts=["fine"]), correlation_id="0").SerializeToString()
    bad = (
        b"\x0a" + bytes([len(BAD_UTF8)]) + BAD_UTF8
        if failing == "unparseable"
        else pb.ClassifyStreamRequest(request=pb.ClassifyRequest(texts=[""]), correlation_id="1").SerializeToString()
    )
    service.backend.delay_s = 0.05
    try:
        responses = call(iter([good, bad]), timeout=10)
        assert pb.ClassifyStreamResponse.FromString(next(responses)).correlation_id == "0"
        with pytest.raises(grpc.RpcError) as info:
            list(responses)
    finally:
        service.backend.delay_s = 0.0
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


# --------------------------------------------------------------------------- enums and deadlines


def test_unknown_truncation_strategy_on_tokenize_and_stream(stub: pb_grpc.SentimentServiceStub) -> None:
    truncation = pb.TruncationOptions(strategy=99)  # type: ignore[arg-type]
    code, details, _ = _code(stub.Tokenize, pb.TokenizeRequest(texts=["x"], truncation=truncation), timeout=10)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "unknown truncation strategy 99" in details
    code, details, _ = _code(_stream, stub, pb.ClassifyRequest(texts=["x"], truncation=truncation))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "unknown truncation strategy 99" in details


def test_one_millisecond_deadline(
    service: InProcessServer, stub: pb_grpc.SentimentServiceStub, channel: grpc.Channel
) -> None:
    heavy = pb.ClassifyRequest(texts=[f"text {i} " + "word " * 200 for i in range(64)])
    service.backend.delay_s = 0.05  # a model that cannot answer within any of the deadlines below
    try:
        _short_deadlines(stub, heavy)
    finally:
        service.backend.delay_s = 0.0
    assert service.front is not None
    admission = service.front.servicer.admission
    assert wait_until(lambda: admission.requests == 0), admission.requests  # no call left holding a slot
    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    assert len(stub.Classify(heavy, timeout=30).results) == 64


def _short_deadlines(stub: pb_grpc.SentimentServiceStub, heavy: pb.ClassifyRequest) -> None:
    for _ in range(10):
        code, _, _ = _code(stub.Classify, heavy, timeout=0.001)
        assert code == grpc.StatusCode.DEADLINE_EXCEEDED
        code, _, _ = _code(_stream, stub, heavy, heavy, timeout=0.001)
        assert code == grpc.StatusCode.DEADLINE_EXCEEDED
    # Deadlines the server sees but cannot meet: just above its reply margin, all shorter than the model's 50 ms.
    for timeout in (0.006, 0.01, 0.02):
        code, _, _ = _code(stub.Classify, heavy, timeout=timeout)
        assert code == grpc.StatusCode.DEADLINE_EXCEEDED


# --------------------------------------------------------------------------- property-based


ODD_TEXTS = ["", " ", "\t\n", "\x00", "\u0301\u0301", "a\x00b", "שלום", "👨\u200d👩\u200d👧", "\ufeff", "word " * 600]
any_text = st.one_of(
    st.text(alphabet=st.characters(exclude_categories=["Cs"]), max_size=300),  # controls and "" included
    st.sampled_from(ODD_TEXTS),
)
# Requests with only valid values are drawn as often as the fully arbitrary ones: enough of them reach
# the model to check the invariants of an answer, not only the refusals.
texts_strategy = st.one_of(
    st.lists(any_text.filter(str.strip), min_size=1, max_size=8),
    st.lists(any_text, max_size=8),
)
strategies = st.one_of(st.sampled_from([0, 1, 2, 3]), st.sampled_from([0, 1, 2, 3, 4, 99]))
max_lengths = st.one_of(st.sampled_from([0, 3, 16, 512]), st.sampled_from([0, 1, 2, 3, 16, 512, 513, 100_000]))


def _expected_invalid(texts: list[str], strategy: int, max_length: int) -> bool:
    """The refusals that need no tokenizer (REJECT's depend on token counts)."""
    return (
        not texts
        or any(not t.strip() for t in texts)
        or strategy not in (0, 1, 2, 3)
        or max_length > MODEL_MAX_LENGTH
        or 0 < max_length <= SPECIAL_TOKENS
    )


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    texts=texts_strategy,
    top_k=st.integers(0, 5),
    return_logits=st.booleans(),
    strategy=strategies,
    max_length=max_lengths,
)
def test_any_request_is_answered_or_refused_cleanly(
    stub: pb_grpc.SentimentServiceStub,
    texts: list[str],
    top_k: int,
    return_logits: bool,
    strategy: int,
    max_length: int,
) -> None:
    request = pb.ClassifyRequest(
        texts=texts,
        top_k=top_k,
        return_logits=return_logits,
        truncation=pb.TruncationOptions(strategy=strategy, max_length=max_length),  # type: ignore[arg-type]
    )
    code, details, response = _code(stub.Classify, request, timeout=30)
    event(code.name)  # --hypothesis-show-statistics: how many reached the model
    event(f"texts={'ok' if texts and all(t.strip() for t in texts) else 'bad'} s={strategy} m={max_length}")
    assert code not in FORBIDDEN, (code, details)
    if _expected_invalid(texts, strategy, max_length):
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, details)
        return
    if code != grpc.StatusCode.OK:
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, details)
        assert (strategy == 2 and "REJECT" in details) or (strategy == 3 and "windows" in details), details
        return
    assert isinstance(response, pb.ClassifyResponse)
    limit = max_length or MODEL_MAX_LENGTH
    assert len(response.results) == len(texts)
    for result in response.results:
        scores = [s.score for s in result.scores]
        assert len(scores) == (len(LABELS) if top_k == 0 else min(top_k, len(LABELS)))
        assert scores == sorted(scores, reverse=True)
        assert all(0.0 <= s <= 1.0 for s in scores)
        assert (result.label, result.score) == (result.scores[0].label, result.scores[0].score)
        assert {s.label for s in result.scores} <= set(LABELS)
        if len(scores) == len(LABELS):
            assert math.isclose(sum(scores), 1.0, abs_tol=1e-5)
        assert SPECIAL_TOKENS <= result.num_tokens <= limit * result.num_windows
        assert not result.truncated or result.num_tokens == limit
        assert result.num_windows == 1 or (strategy == 3 and not result.truncated)
        assert not (result.truncated and strategy == 2)
        assert len(result.logits) == (len(LABELS) if return_logits else 0)
        if return_logits and result.num_windows == 1:  # the scores are the softmax of the logits
            # (several windows, MEAN: the mean of the windows' probabilities, not the softmax of the mean logits)
            top = max(result.logits)
            total = sum(math.exp(x - top) for x in result.logits)
            for s in result.scores:
                assert math.isclose(s.score, math.exp(result.logits[s.label_id] - top) / total, abs_tol=1e-5)
