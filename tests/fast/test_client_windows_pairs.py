"""Sliding windows and text pairs end to end: the Python client against the in-process front-end.

The fake backend's logits are a function of each row's ids (fake_backend.fake_logits), so every
window's and pair's answer can be recomputed here from what Tokenize returns for it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt
import pytest
from fake_backend import InProcessServer, fake_logits, fake_model
from sentiment.v1 import sentiment_pb2 as pb
from sentiment.v1 import sentiment_pb2_grpc as pb_grpc
from sentiment_client import AsyncSentimentClient, Classification, SentimentClient, SentimentError, TokenizedText
from sentiment_client.cli import main
from sentiment_server.tooling.checkpoints import bundled_tokenizer_file
from tokenizers import Tokenizer

LONG = "The plot was predictable, the acting wooden, and yet I could not stop watching it. " * 3
WINDOW = 16  # max_length of each window in these tests: 14 text tokens and [CLS], [SEP]
PAIRS = [
    ("A man is playing a guitar.", "Someone plays an instrument."),
    ("I love it", "so do I"),
    ("ok", LONG),
]
TYPE_IDS_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
Floats = npt.NDArray[np.float64]


@pytest.fixture(scope="module")
def service() -> Iterator[InProcessServer]:
    with InProcessServer() as started:
        yield started


@pytest.fixture(scope="module")
def client(service: InProcessServer) -> Iterator[SentimentClient]:
    with SentimentClient(service.target) as c:
        yield c


def _softmax(logits: Floats) -> Floats:
    shifted = np.exp(logits - logits.max())
    out: Floats = shifted / shifted.sum()
    return out


def _logits(t: TokenizedText, with_type_ids: bool = False) -> Floats:
    """What the fake backend answers for one unpadded window or pair."""
    ids, mask = np.array([t.input_ids]), np.array([t.attention_mask])
    type_ids = np.array([t.token_type_ids]) if with_type_ids else None
    row: Floats = fake_logits(ids, mask, 2, type_ids)[0].astype(np.float64)
    return row


def _by_label_id(c: Classification | Any) -> Floats:
    """Scores in label id order (results are sorted by score)."""
    return np.array([s.score for s in sorted(c.scores, key=lambda s: s.label_id)])


def _reference(max_length: int) -> Tokenizer:
    """The model's tokenizer as `pipeline({"text": ..., "text_pair": ...})` runs it: no padding, longest_first."""
    tokenizer = Tokenizer.from_file(str(bundled_tokenizer_file()))
    tokenizer.no_padding()
    tokenizer.enable_truncation(max_length=max_length)
    return tokenizer


def _text_tokens(client: SentimentClient, text: str) -> tuple[str, ...]:
    """The text's tokens without truncation and without [CLS]/[SEP]."""
    (whole,) = client.tokenize(text)
    assert not whole.truncated
    return whole.tokens[1:-1]


# --- windows ------------------------------------------------------------------------------


def test_a_text_that_fits_one_window_answers_like_truncate(client: SentimentClient) -> None:
    plain = client.classify(["I love it", "meh"], return_logits=True).results
    windowed = client.classify(
        ["I love it", "meh"], truncation="window", return_logits=True, return_windows=True
    ).results
    for p, w in zip(plain, windowed, strict=True):
        assert (w.label, w.score, w.scores, w.logits) == (p.label, p.score, p.scores, p.logits)
        assert (w.num_tokens, w.truncated, w.num_windows) == (p.num_tokens, False, 1)
        assert p.num_windows == 1 and p.windows == ()
        (only,) = w.windows
        assert (only.start_token, only.end_token, only.num_tokens) == (0, p.num_tokens - 2, p.num_tokens)
        assert only.scores == p.scores


@pytest.mark.parametrize("stride", [None, 0, 5, 13])
def test_windows_cover_the_text_with_the_stride(client: SentimentClient, stride: int | None) -> None:
    text_tokens = _text_tokens(client, LONG)
    result = client.classify(LONG, truncation="window", max_length=WINDOW, stride=stride, return_windows=True)
    (c,) = result.results
    shared = (WINDOW - 2) // 4 if stride is None else stride  # unset: a quarter of the window's text tokens
    assert c.truncated is False
    assert c.num_windows == len(c.windows) > 1
    assert c.windows[0].start_token == 0 and c.windows[-1].end_token == len(text_tokens)
    for before, after in zip(c.windows, c.windows[1:], strict=False):
        assert after.start_token == before.end_token - shared
    for w in c.windows:
        assert 0 < w.end_token - w.start_token <= WINDOW - 2
        assert w.num_tokens == w.end_token - w.start_token + 2

    (tokenized,) = client.tokenize(LONG, truncation="window", max_length=WINDOW, stride=stride)
    windows = (tokenized, *tokenized.overflowing)
    assert len(windows) == c.num_windows and not tokenized.truncated
    for t, w in zip(windows, c.windows, strict=True):
        assert t.tokens == ("[CLS]", *text_tokens[w.start_token : w.end_token], "[SEP]")
        assert len(t.input_ids) == w.num_tokens
    assert all(t.overflowing == () for t in windows[1:])  # the windows hang off the first one only


@pytest.mark.parametrize("aggregation", [None, "mean", "mean_logits", "max"])
def test_aggregation_combines_the_windows(client: SentimentClient, aggregation: Any) -> None:
    (tokenized,) = client.tokenize(LONG, truncation="window", max_length=WINDOW)
    windows = (tokenized, *tokenized.overflowing)
    logits = np.stack([_logits(t) for t in windows])
    probs = np.stack([_softmax(x) for x in logits])
    weights = np.array([len(t.input_ids) for t in windows], dtype=np.float64)  # special tokens included
    weights /= weights.sum()
    if aggregation in (None, "mean"):  # the server's default is mean
        want_scores, want_logits = weights @ probs, weights @ logits
    elif aggregation == "mean_logits":
        want_logits = weights @ logits
        want_scores = _softmax(want_logits)
    else:
        best = int(np.argmax(probs.max(axis=1)))
        want_scores, want_logits = probs[best], logits[best]

    (c,) = client.classify(
        LONG,
        truncation="window",
        max_length=WINDOW,
        aggregation=aggregation,
        return_logits=True,
        return_windows=True,
    ).results
    assert c.num_windows == len(windows)
    assert _by_label_id(c) == pytest.approx(want_scores, abs=1e-5)
    assert list(c.logits) == pytest.approx(want_logits, abs=1e-5)
    assert c.score == max(s.score for s in c.scores)
    for w, p in zip(c.windows, probs, strict=True):
        assert _by_label_id(w) == pytest.approx(p, abs=1e-5)
        assert [s.score for s in w.scores] == sorted((s.score for s in w.scores), reverse=True)


def test_windows_are_listed_only_when_asked_for(client: SentimentClient) -> None:
    (c,) = client.classify(LONG, truncation="window", max_length=WINDOW).results
    assert c.num_windows > 1 and c.windows == ()
    (truncated,) = client.classify(LONG, max_length=WINDOW).results
    assert (truncated.truncated, truncated.num_windows, truncated.num_tokens) == (True, 1, WINDOW)


def test_a_stride_that_leaves_no_progress_is_refused(client: SentimentClient) -> None:
    with pytest.raises(SentimentError) as info:
        client.classify(LONG, truncation="window", max_length=WINDOW, stride=WINDOW - 2)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_windows_and_pairs_through_the_async_client(service: InProcessServer, client: SentimentClient) -> None:
    want_window = client.classify(LONG, truncation="window", max_length=WINDOW, aggregation="max", return_windows=True)
    want_pairs = client.classify_pairs(PAIRS, return_logits=True)

    async def run() -> None:
        async with AsyncSentimentClient(service.target) as aclient:
            got = await aclient.classify(
                LONG, truncation="window", max_length=WINDOW, aggregation="max", return_windows=True
            )
            assert got.results == want_window.results
            assert (await aclient.classify_pairs(PAIRS, return_logits=True)).results == want_pairs.results
            tokens = await aclient.tokenize_pairs(PAIRS[:1])
            assert tokens == client.tokenize_pairs(PAIRS[:1])

    asyncio.run(run())


def test_cli_prints_each_window(service: InProcessServer, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--target", service.target, "classify", "--window", "--max-length", str(WINDOW), "--return-windows"]
    assert main([*args, LONG, "I love it"]) == 0
    header, long_row, *rest = capsys.readouterr().out.splitlines()
    assert header.split() == ["TEXT", "LABEL", "SCORE", "WINDOWS"]
    num_windows = int(long_row.split()[-1])
    assert num_windows > 1
    assert all(line.startswith("  tokens ") for line in rest[:num_windows])
    assert rest[0].split()[:2] == ["tokens", f"0-{WINDOW - 2}"]
    assert rest[num_windows].startswith("I love it") and rest[num_windows].split()[-1] == "1"
    assert rest[num_windows + 1].split()[:2] == ["tokens", "0-3"]
    assert len(rest) == num_windows + 2


# --- pairs --------------------------------------------------------------------------------


def test_pairs_are_tokenized_like_the_tokenizer(client: SentimentClient) -> None:
    reference = _reference(128)  # the fake model's maximum
    tokenized = client.tokenize_pairs(PAIRS)
    for (text, text_pair), t in zip(PAIRS, tokenized, strict=True):
        encoding = reference.encode(text, text_pair)
        assert list(t.input_ids) == encoding.ids
        assert t.tokens == tuple(encoding.tokens)
        assert t.truncated == bool(encoding.overflowing)
        assert t.token_type_ids == ()  # the default fake model takes no segment ids
    assert tokenized[0].tokens.count("[SEP]") == 2

    (cut,) = client.tokenize_pairs([PAIRS[2]], max_length=20)
    assert list(cut.input_ids) == _reference(20).encode(*PAIRS[2]).ids
    assert (len(cut.input_ids), cut.truncated) == (20, True)
    assert cut.tokens[:4] == ("[CLS]", "ok", "[SEP]", "the")  # the longer text is cut first


def test_pairs_are_classified_as_one_sequence(client: SentimentClient) -> None:
    result = client.classify_pairs(PAIRS, return_logits=True)
    tokenized = client.tokenize_pairs(PAIRS)
    assert len(result.results) == len(PAIRS)
    for c, t in zip(result.results, tokenized, strict=True):
        assert list(c.logits) == pytest.approx(_logits(t), abs=1e-5)
        assert _by_label_id(c) == pytest.approx(_softmax(_logits(t)), abs=1e-5)
        assert (c.num_tokens, c.truncated, c.num_windows, c.windows) == (len(t.input_ids), t.truncated, 1, ())
    alone = client.classify([PAIRS[0][0]], return_logits=True).results[0]
    assert alone.logits != result.results[0].logits

    with pytest.raises(SentimentError) as info:
        client.classify_pairs([PAIRS[2]], max_length=20, truncation="reject")
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_cli_classifies_pairs(
    service: InProcessServer, client: SentimentClient, capsys: pytest.CaptureFixture[str]
) -> None:
    (premise, hypothesis), (text, text_pair) = PAIRS[:2]
    assert main(["--target", service.target, "classify", premise, "--pair", hypothesis, text, "--pair", text_pair]) == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.split() == ["TEXT", "PAIR", "LABEL", "SCORE"]
    want = client.classify_pairs(PAIRS[:2]).results
    assert [row.split()[-2:] for row in rows] == [[c.label, f"{c.score:.4f}"] for c in want]


def test_window_is_refused_for_pairs_and_texts_with_pairs(stub: pb_grpc.SentimentServiceStub) -> None:
    pairs = [pb.TextPair(text="a", text_pair="b")]
    window = pb.TruncationOptions(strategy=pb.TRUNCATION_STRATEGY_WINDOW)
    refused = [
        (stub.Classify, pb.ClassifyRequest(pairs=pairs, truncation=window)),
        (stub.Tokenize, pb.TokenizeRequest(pairs=pairs, truncation=window)),
        (stub.Classify, pb.ClassifyRequest(texts=["a"], pairs=pairs)),  # exactly one of texts and pairs
        (stub.Tokenize, pb.TokenizeRequest(texts=["a"], pairs=pairs)),
    ]
    for method, request in refused:
        with pytest.raises(grpc.RpcError) as info:
            method(request, timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, request


def test_window_is_refused_for_pairs_through_the_client(client: SentimentClient) -> None:
    with pytest.raises(SentimentError) as info:
        client.classify_pairs(PAIRS[:1], truncation="window")  # type: ignore[arg-type]  # what the types forbid
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT


def test_segment_ids_for_a_model_that_takes_them(client: SentimentClient) -> None:
    assert client.model_info().inputs == ("input_ids", "attention_mask")
    model = fake_model(max_length=128, inputs=TYPE_IDS_INPUTS)
    reference = _reference(128)
    with InProcessServer(model=model) as server, SentimentClient(server.target) as bert:
        assert bert.model_info().inputs == TYPE_IDS_INPUTS
        tokenized = bert.tokenize_pairs(PAIRS[:2])
        result = bert.classify_pairs(PAIRS[:2], return_logits=True)
        (single,) = bert.tokenize("I love it")
    for (text, text_pair), t, c in zip(PAIRS, tokenized, result.results, strict=False):
        encoding = reference.encode(text, text_pair)
        assert list(t.token_type_ids) == encoding.type_ids
        assert set(t.token_type_ids) == {0, 1}
        assert list(c.logits) == pytest.approx(_logits(t, with_type_ids=True), abs=1e-5)
    assert single.token_type_ids == (0,) * len(single.input_ids)
