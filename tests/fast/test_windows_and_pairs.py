"""Sliding windows and text pairs in the front-end, against the fake backend: the windows the tokenizer
gives, their aggregation, their way through the coalescer and back, pairs' segment ids, and refusals."""

from __future__ import annotations

import math
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from fake_backend import FakeBackend, InProcessServer, fake_logits, fake_model
from sentiment.v1 import sentiment_pb2 as pb
from sentiment.v1 import sentiment_pb2_grpc as pb_grpc
from sentiment_server.core.postprocess import softmax
from sentiment_server.core.tokenization import TextTokenizer
from sentiment_server.core.windows import Aggregation, aggregate
from sentiment_server.model_artifact import BASE_INPUTS, SINGLE_LABEL, TOKEN_TYPE_IDS
from sentiment_server.tooling.checkpoints import bundled_tokenizer_file
from tokenizers import Tokenizer

WINDOW = 32  # tokens per window, [CLS] and [SEP] included
WORDS = tuple("the film was long but never dull and the cast did fine work with a thin script".split())  # noqa: SIM905


def text_of(tokens: int, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    return " ".join(rng.choice(WORDS, size=tokens))  # one token per word with this vocabulary


@pytest.fixture(scope="module")
def tokenizer() -> TextTokenizer:
    return TextTokenizer(bundled_tokenizer_file(), 128, 0)


# --------------------------------------------------------------------------- the windows


@pytest.mark.parametrize("tokens", [10, 30, 31, 80, 400])
@pytest.mark.parametrize("stride", [0, 7, 29])
def test_windows_cover_the_text_as_the_tokenizer_cuts_it(tokenizer: TextTokenizer, tokens: int, stride: int) -> None:
    text = text_of(tokens, seed=tokens)
    full = Tokenizer.from_file(str(bundled_tokenizer_file()))
    full.no_truncation()
    full.no_padding()
    text_ids = full.encode(text, add_special_tokens=False).ids
    [encoded] = tokenizer.encode([text], WINDOW, window_stride=stride)
    windows = encoded.windows
    room = WINDOW - tokenizer.num_special_tokens
    for i, w in enumerate(windows):
        ids = w.ids.tolist()
        assert ids[0] == 101 and ids[-1] == 102 and len(ids) <= WINDOW  # special tokens in every window
        assert ids[1:-1] == text_ids[w.start_token : w.end_token]  # the span is where the window's tokens are
        if i:
            assert w.start_token == windows[i - 1].end_token - stride  # `stride` tokens shared with the one before
    assert windows[0].start_token == 0 and windows[-1].end_token == len(text_ids)
    assert all(w.end_token - w.start_token == room for w in windows[:-1])
    assert len(windows) == (1 if len(text_ids) <= room else 1 + math.ceil((len(text_ids) - room) / (room - stride)))


def test_a_text_that_fits_one_window_is_tokenized_as_without_windows(tokenizer: TextTokenizer) -> None:
    text = text_of(20)
    [windowed] = tokenizer.encode([text], WINDOW, window_stride=5)
    [plain] = tokenizer.encode([text], WINDOW)
    assert windowed.overflowing == () and windowed.ids.tolist() == plain.ids.tolist()


# --------------------------------------------------------------------------- aggregation

ROWS = [[2.0, -1.0], [-0.5, 0.5], [0.1, 0.3]]
WEIGHTS = [32, 32, 10]


def test_mean_weights_each_windows_probabilities_by_its_tokens() -> None:
    probs, logits = aggregate(ROWS, WEIGHTS, SINGLE_LABEL, Aggregation.MEAN)
    each = softmax(ROWS)
    for j in range(2):
        assert probs[j] == pytest.approx(sum(w * p[j] for w, p in zip(WEIGHTS, each, strict=True)) / 74)
        assert logits[j] == pytest.approx(sum(w * r[j] for w, r in zip(WEIGHTS, ROWS, strict=True)) / 74)


def test_mean_logits_is_the_softmax_of_the_weighted_mean_logits() -> None:
    probs, logits = aggregate(ROWS, WEIGHTS, SINGLE_LABEL, Aggregation.MEAN_LOGITS)
    assert logits == pytest.approx([(64 - 16 + 1) / 74, (-32 + 16 + 3) / 74])
    assert probs == pytest.approx(softmax([logits])[0])


def test_max_is_the_most_confident_window() -> None:
    probs, logits = aggregate(ROWS, WEIGHTS, SINGLE_LABEL, Aggregation.MAX)
    assert logits == ROWS[0] and probs == softmax([ROWS[0]])[0]


@pytest.mark.parametrize("how", list(Aggregation))
def test_one_window_is_the_answer_as_it_is(how: Aggregation) -> None:
    assert aggregate([ROWS[1]], [7], SINGLE_LABEL, how) == (softmax([ROWS[1]])[0], ROWS[1])


# --------------------------------------------------------------------------- through the service


@pytest.fixture
def window_service() -> Iterator[InProcessServer]:
    with InProcessServer(model=fake_model(max_length=128), max_windows_per_text=40, max_windows_per_request=60) as s:
        yield s


def _stub(target: str) -> tuple[grpc.Channel, pb_grpc.SentimentServiceStub]:
    channel = grpc.insecure_channel(target)
    return channel, pb_grpc.SentimentServiceStub(channel)  # type: ignore[no-untyped-call]


def _window_options(aggregation: int = 0, stride: int | None = None) -> pb.TruncationOptions:
    options = pb.TruncationOptions(strategy=pb.TRUNCATION_STRATEGY_WINDOW, max_length=WINDOW, aggregation=aggregation)  # type: ignore[arg-type]
    if stride is not None:
        options.stride = stride
    return options


@pytest.mark.parametrize(
    ("aggregation", "how"),
    [
        (pb.WINDOW_AGGREGATION_UNSPECIFIED, Aggregation.MEAN),
        (pb.WINDOW_AGGREGATION_MEAN_LOGITS, Aggregation.MEAN_LOGITS),
        (pb.WINDOW_AGGREGATION_MAX, Aggregation.MAX),
    ],
)
def test_each_text_is_answered_from_its_own_windows(
    window_service: InProcessServer, tokenizer: TextTokenizer, aggregation: int, how: Aggregation
) -> None:
    texts = [text_of(n, seed=n) for n in (12, 95, 400, 31)]
    channel, stub = _stub(window_service.target)
    with channel:
        response = stub.Classify(
            pb.ClassifyRequest(
                texts=texts, return_logits=True, return_windows=True, truncation=_window_options(aggregation)
            ),
            timeout=10,
        )
    stride = (WINDOW - 2) // 4  # the default: a quarter of a window's text tokens
    for text, result in zip(texts, response.results, strict=True):
        [encoded] = tokenizer.encode([text], WINDOW, window_stride=stride)
        windows = encoded.windows
        rows = [
            fake_logits(w.ids.reshape(1, -1), np.ones((1, len(w.ids)), dtype=np.int64), 2)[0].tolist() for w in windows
        ]
        probs, logits = aggregate(rows, [len(w.ids) for w in windows], SINGLE_LABEL, how)
        assert result.num_windows == len(windows) and not result.truncated
        assert result.num_tokens == sum(len(w.ids) for w in windows)
        assert list(result.logits) == pytest.approx(logits, abs=1e-6)
        assert {s.label_id: s.score for s in result.scores} == pytest.approx(dict(enumerate(probs)), abs=1e-6)
        assert [(w.start_token, w.end_token, w.num_tokens) for w in result.windows] == [
            (w.start_token, w.end_token, len(w.ids)) for w in windows
        ]
        for window, row in zip(result.windows, rows, strict=True):
            assert {s.label_id: s.score for s in window.scores} == pytest.approx(
                dict(enumerate(softmax([row])[0])), abs=1e-6
            )


def test_a_short_text_gets_exactly_the_answer_it_gets_without_windows(window_service: InProcessServer) -> None:
    channel, stub = _stub(window_service.target)
    with channel:
        windowed = stub.Classify(
            pb.ClassifyRequest(texts=["a fine film"], return_logits=True, truncation=_window_options()), timeout=10
        )
        plain = stub.Classify(
            pb.ClassifyRequest(
                texts=["a fine film"], return_logits=True, truncation=pb.TruncationOptions(max_length=WINDOW)
            ),
            timeout=10,
        )
    assert windowed.results[0] == plain.results[0]
    assert windowed.results[0].num_windows == 1


def test_windows_travel_as_ordinary_rows_in_shared_batches(window_service: InProcessServer) -> None:
    channel, stub = _stub(window_service.target)
    with channel:
        stub.Classify(pb.ClassifyRequest(texts=[text_of(300), "short"], truncation=_window_options()), timeout=10)
    texts_sent = sum(rows for rows, _ in window_service.backend.batches)
    assert texts_sent == 1 + math.ceil((300 - 30) / (30 - 7)) + 1  # every window, plus the short text
    assert all(width <= WINDOW for _, width in window_service.backend.batches)


def test_tokenize_shows_the_windows(window_service: InProcessServer, tokenizer: TextTokenizer) -> None:
    text = text_of(100)
    channel, stub = _stub(window_service.target)
    with channel:
        response = stub.Tokenize(pb.TokenizeRequest(texts=[text], truncation=_window_options(stride=3)), timeout=10)
    [encoded] = tokenizer.encode([text], WINDOW, window_stride=3)
    [result] = response.results
    assert [list(result.input_ids), *(list(w.input_ids) for w in result.overflowing)] == [
        w.ids.tolist() for w in encoded.windows
    ]
    assert not result.truncated and list(result.token_type_ids) == []  # this model takes no segment ids


@pytest.mark.parametrize(
    ("request_fields", "expected"),
    [
        ({"texts": [text_of(2000)]}, "needs 87 windows (the limit is 40 per text"),
        ({"texts": [text_of(800)] * 3}, "need 105 windows (the limit is 60 per request)"),
        ({"texts": ["fine"], "truncation": _window_options(stride=30)}, "stride 30 must be below 30"),
        (
            {
                "texts": ["fine"],
                "truncation": pb.TruncationOptions(strategy=pb.TRUNCATION_STRATEGY_WINDOW, max_length=2),
            },
            "max_length must be greater than 2",
        ),
        ({"pairs": [pb.TextPair(text="a", text_pair="b")]}, "WINDOW takes single texts, not pairs"),
        ({"texts": ["fine"], "truncation": pb.TruncationOptions(stride=3)}, "apply to truncation strategy WINDOW only"),
        ({"texts": ["fine"], "truncation": pb.TruncationOptions(aggregation=pb.WINDOW_AGGREGATION_MAX)}, "WINDOW only"),
        ({"texts": ["fine"], "return_windows": True, "truncation": pb.TruncationOptions()}, "return_windows applies"),
        ({"texts": ["fine"], "truncation": _window_options(aggregation=9)}, "unknown window aggregation 9"),
    ],
)
def test_bad_window_requests_are_refused_before_the_model(
    window_service: InProcessServer, request_fields: dict[str, object], expected: str
) -> None:
    fields = {"truncation": _window_options(), **request_fields}
    channel, stub = _stub(window_service.target)
    with channel, pytest.raises(grpc.RpcError) as caught:
        stub.Classify(pb.ClassifyRequest(**fields), timeout=10)  # type: ignore[arg-type]
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert expected in (caught.value.details() or "")
    assert window_service.backend.batches == []


# --------------------------------------------------------------------------- pairs

PAIRS = [
    ("A man is playing a guitar.", "Someone plays music."),
    ("The cat sat on the mat.", "A dog is barking loudly at the mailman " * 20),
    ("猫がマットの上に座った。", "🐈 on a mat 🧶"),
]


@pytest.fixture
def pair_service() -> Iterator[InProcessServer]:
    with InProcessServer(FakeBackend(), fake_model(max_length=48, inputs=(*BASE_INPUTS, TOKEN_TYPE_IDS))) as s:
        yield s


def test_pairs_are_tokenized_as_the_tokenizer_does_with_segment_ids(pair_service: InProcessServer) -> None:
    reference = Tokenizer.from_file(str(bundled_tokenizer_file()))
    reference.no_padding()
    reference.enable_truncation(max_length=48)  # longest_first, as truncation=True
    channel, stub = _stub(pair_service.target)
    with channel:
        response = stub.Tokenize(
            pb.TokenizeRequest(pairs=[pb.TextPair(text=a, text_pair=b) for a, b in PAIRS]), timeout=10
        )
        info = stub.GetModelInfo(pb.GetModelInfoRequest(), timeout=10)
    assert list(info.inputs) == ["input_ids", "attention_mask", "token_type_ids"]
    for (a, b), result in zip(PAIRS, response.results, strict=True):
        expected = reference.encode(a, b)
        assert list(result.input_ids) == expected.ids
        assert list(result.token_type_ids) == expected.type_ids and 1 in result.token_type_ids
        assert result.truncated == bool(expected.overflowing)
    assert [r.truncated for r in response.results] == [False, True, False]


def test_pairs_reach_the_model_with_their_segment_ids(pair_service: InProcessServer) -> None:
    reference = Tokenizer.from_file(str(bundled_tokenizer_file()))
    reference.no_padding()
    reference.enable_truncation(max_length=48)
    channel, stub = _stub(pair_service.target)
    with channel:
        response = stub.Classify(
            pb.ClassifyRequest(pairs=[pb.TextPair(text=a, text_pair=b) for a, b in PAIRS], return_logits=True),
            timeout=10,
        )
    for (a, b), result in zip(PAIRS, response.results, strict=True):
        e = reference.encode(a, b)
        ids, types = np.array([e.ids]), np.array([e.type_ids])
        assert list(result.logits) == pytest.approx(fake_logits(ids, np.ones_like(ids), 2, types)[0].tolist())
    assert pair_service.backend.segment_batches == len(pair_service.backend.batches) > 0


def test_a_model_without_segment_ids_gets_pairs_without_them(server: InProcessServer) -> None:
    channel, stub = _stub(server.target)
    with channel:
        response = stub.Classify(pb.ClassifyRequest(pairs=[pb.TextPair(text="a b", text_pair="c d")]), timeout=10)
        tokens = stub.Tokenize(pb.TokenizeRequest(pairs=[pb.TextPair(text="a b", text_pair="c d")]), timeout=10)
    assert response.results[0].num_tokens == 7  # [CLS] a b [SEP] c d [SEP]
    assert server.backend.segment_batches == 0 and list(tokens.results[0].token_type_ids) == []


@pytest.mark.parametrize(
    ("request_fields", "expected"),
    [
        ({"pairs": [pb.TextPair(text="a", text_pair="  ")]}, "pairs[0].text_pair is empty"),
        ({"pairs": [pb.TextPair(text="a", text_pair="b"), pb.TextPair(text_pair="b")]}, "pairs[1].text is empty"),
        ({"pairs": [pb.TextPair(text="a", text_pair="b")], "texts": ["c"]}, "set texts or pairs, not both"),
        (
            {
                "pairs": [pb.TextPair(text="a", text_pair="b"), pb.TextPair(text="long " * 60, text_pair="b")],
                "truncation": pb.TruncationOptions(strategy=pb.TRUNCATION_STRATEGY_REJECT),
            },
            "pairs [1] exceed 48 tokens and truncation strategy is REJECT",
        ),
    ],
)
def test_bad_pairs_are_refused_before_the_model(
    pair_service: InProcessServer, request_fields: dict[str, object], expected: str
) -> None:
    channel, stub = _stub(pair_service.target)
    with channel:
        for call, message in ((stub.Classify, pb.ClassifyRequest), (stub.Tokenize, pb.TokenizeRequest)):
            with pytest.raises(grpc.RpcError) as caught:
                call(message(**request_fields), timeout=10)  # type: ignore[arg-type]
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert expected in (caught.value.details() or "")
    assert pair_service.backend.batches == []
