"""Several models behind one front-end, and switching a model's version under load (fake backends)."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator

import grpc
import numpy as np
import pytest
from fake_backend import LABELS, FakeBackend, FakeVersions, InProcessServer, fake_logits, fake_model, wait_until
from sentiment.v1 import admin_pb2, admin_pb2_grpc
from sentiment.v1 import sentiment_pb2 as pb
from sentiment.v1 import sentiment_pb2_grpc as pb_grpc
from sentiment_server.core.inference import ServedModel

EMOTIONS = ("anger", "joy", "sadness")
SWAPPED = tuple(reversed(LABELS))  # version 2: other label order, so every answer says which version gave it
TEXTS = ["I love it", "terrible service", "fine, I guess", "the best day ever", "meh"]


def with_expectations(model: ServedModel, texts: list[str], shift: float = 0.0) -> ServedModel:
    """`model` whose export recorded the fake backend's logits on `texts` (off by `shift`: a bad version)."""
    rows = []
    for encoded in model.tokenizer.encode(texts):
        ids = encoded.ids[None, :]
        rows.append((fake_logits(ids, np.ones_like(ids), len(model.info.labels))[0] + shift).tolist())
    info = dataclasses.replace(model.info, expected_texts=texts, expected_logits=rows, expected_atol=1e-3)
    return ServedModel(info, model.tokenizer)


@pytest.fixture
def two_models() -> Iterator[InProcessServer]:
    emotion = fake_model(EMOTIONS, name="emotion", max_length=16)
    with InProcessServer(models=[(emotion, FakeBackend(len(EMOTIONS)))]) as server:
        yield server


@pytest.fixture
def versions() -> FakeVersions:
    source = FakeVersions()
    source.add(with_expectations(fake_model(name="sentiment", version="1"), TEXTS))
    source.add(with_expectations(fake_model(SWAPPED, name="sentiment", version="2"), TEXTS))
    return source


@pytest.fixture
def rolling(versions: FakeVersions) -> Iterator[InProcessServer]:
    model, backend = versions.versions[("sentiment", "1")]
    with InProcessServer(backend, model, source=versions) as server:
        yield server


def stub(target: str) -> pb_grpc.SentimentServiceStub:
    return pb_grpc.SentimentServiceStub(grpc.insecure_channel(target))  # type: ignore[no-untyped-call]


def admin(server: InProcessServer) -> admin_pb2_grpc.ModelAdminServiceStub:
    assert server.front is not None
    channel = grpc.insecure_channel(f"127.0.0.1:{server.front.admin_port}")
    return admin_pb2_grpc.ModelAdminServiceStub(channel)  # type: ignore[no-untyped-call]


def test_each_model_answers_with_its_own_labels(two_models: InProcessServer) -> None:
    service = stub(two_models.target)
    default = service.Classify(pb.ClassifyRequest(texts=TEXTS), timeout=5)
    emotion = service.Classify(pb.ClassifyRequest(texts=TEXTS, model="emotion"), timeout=5)
    assert (default.model_name, emotion.model_name) == ("sentiment", "emotion")
    assert {s.label for r in default.results for s in r.scores} == set(LABELS)
    assert {s.label for r in emotion.results for s in r.scores} == set(EMOTIONS)
    named = service.Classify(pb.ClassifyRequest(texts=TEXTS, model="sentiment"), timeout=5)
    assert [r.label for r in named.results] == [r.label for r in default.results]
    info = service.GetModelInfo(pb.GetModelInfoRequest(model="emotion"), timeout=5)
    assert (info.model_name, list(info.labels)) == ("emotion", list(EMOTIONS))
    # Each model tokenizes with its own limits.
    long_text = " ".join(["word"] * 40)
    tokens = service.Tokenize(pb.TokenizeRequest(texts=[long_text], model="emotion"), timeout=5)
    assert len(tokens.results[0].input_ids) == 16 and tokens.results[0].truncated


def test_list_models(two_models: InProcessServer) -> None:
    listed = stub(two_models.target).ListModels(pb.ListModelsRequest(), timeout=5)
    assert listed.default_model == "sentiment"
    assert [(m.name, m.model_version, list(m.labels), m.ready) for m in listed.models] == [
        ("emotion", "1", list(EMOTIONS), True),
        ("sentiment", "1", list(LABELS), True),
    ]


@pytest.mark.parametrize(
    ("name", "code", "message"),
    [
        ("toxicity", grpc.StatusCode.NOT_FOUND, "no model named 'toxicity'; this service serves emotion, sentiment"),
        ("../sentiment", grpc.StatusCode.INVALID_ARGUMENT, "model name '../sentiment' must be"),
        ("x" * 65, grpc.StatusCode.INVALID_ARGUMENT, "at most 64"),
    ],
)
def test_unknown_or_malformed_model_never_reaches_a_backend(
    two_models: InProcessServer, name: str, code: grpc.StatusCode, message: str
) -> None:
    service = stub(two_models.target)
    calls = [
        lambda: service.Classify(pb.ClassifyRequest(texts=["hello"], model=name), timeout=5),
        lambda: service.Tokenize(pb.TokenizeRequest(texts=["hello"], model=name), timeout=5),
        lambda: service.GetModelInfo(pb.GetModelInfoRequest(model=name), timeout=5),
    ]
    for call in calls:
        with pytest.raises(grpc.RpcError) as refused:
            call()
        assert refused.value.code() == code and message in (refused.value.details() or "")
    assert two_models.backend.batches == []
    assert two_models.front is not None
    registry = two_models.front.metrics.registry
    assert wait_until(
        lambda: (
            registry.get_sample_value(
                "sentiment_requests_total", {"method": "Classify", "code": code.name, "model": ""}
            )
            == 1.0
        )
    )


def test_metrics_carry_the_model(two_models: InProcessServer) -> None:
    service = stub(two_models.target)
    service.Classify(pb.ClassifyRequest(texts=TEXTS, model="emotion"), timeout=5)
    service.Classify(pb.ClassifyRequest(texts=TEXTS[:2]), timeout=5)
    assert two_models.front is not None
    registry = two_models.front.metrics.registry
    assert wait_until(lambda: registry.get_sample_value("sentiment_texts_total", {"model": "emotion"}) == len(TEXTS))
    assert wait_until(lambda: registry.get_sample_value("sentiment_texts_total", {"model": "sentiment"}) == 2)


def _expected_labels(server: InProcessServer) -> dict[str, str]:
    """Each text's version-1 label; version 2 answers the other one (its labels are swapped)."""
    response = stub(server.target).Classify(pb.ClassifyRequest(texts=TEXTS), timeout=5)
    assert response.model_version == "1"
    return {text: r.label for text, r in zip(TEXTS, response.results, strict=True)}


def test_rollout_and_rollback_under_load_drop_no_call(rolling: InProcessServer, versions: FakeVersions) -> None:
    v1_labels = _expected_labels(rolling)
    swap = dict(zip(LABELS, SWAPPED, strict=True))
    rolling.backend.delay_s = 0.002  # calls are in flight at every switch
    versions.versions[("sentiment", "2")][1].delay_s = 0.002
    stop = threading.Event()
    answers: list[tuple[str, list[str]]] = []
    failures: list[BaseException] = []

    def caller(i: int) -> None:
        service = stub(rolling.target)
        texts = TEXTS[i % len(TEXTS) :] + TEXTS[: i % len(TEXTS)]
        while not stop.is_set():
            try:
                r = service.Classify(pb.ClassifyRequest(texts=texts), timeout=10)
            except grpc.RpcError as exc:
                failures.append(exc)
                continue
            labels = [res.label for res in r.results]
            expected = [v1_labels[t] if r.model_version == "1" else swap[v1_labels[t]] for t in texts]
            assert labels == expected, (r.model_version, texts, labels)  # all of one version
            answers.append((r.model_version, labels))

    callers = [threading.Thread(target=caller, args=(i,)) for i in range(16)]
    for t in callers:
        t.start()
    try:
        time.sleep(0.3)
        rolled = admin(rolling).Rollout(admin_pb2.RolloutRequest(model="sentiment"), timeout=30)
        assert (rolled.previous_version, rolled.model_version) == ("1", "2")
        assert versions.retired == [("sentiment", "1")] and rolling.backend.closed
        settled = len(answers)
        time.sleep(0.3)
        assert {v for v, _ in answers[settled:]} == {"2"}  # after the switch returns, only the new version
        back = admin(rolling).Rollback(admin_pb2.RollbackRequest(), timeout=30)
        assert (back.previous_version, back.model_version) == ("2", "1")
        settled = len(answers)
        time.sleep(0.3)
        assert {v for v, _ in answers[settled:]} == {"1"}
    finally:
        stop.set()
        for t in callers:
            t.join(10)
    assert failures == []
    assert {v for v, _ in answers} == {"1", "2"}
    assert versions.retired == [("sentiment", "1"), ("sentiment", "2")]


def _refused(server: InProcessServer, request: admin_pb2.RolloutRequest, message: str) -> None:
    with pytest.raises(grpc.RpcError) as refused:
        admin(server).Rollout(request, timeout=30)
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert message in (refused.value.details() or "")
    response = stub(server.target).Classify(pb.ClassifyRequest(texts=TEXTS), timeout=5)
    assert response.model_version == "1"  # the old version keeps serving


def test_rollout_refuses_a_version_that_fails_to_start(rolling: InProcessServer, versions: FakeVersions) -> None:
    versions.refuse[("sentiment", "2")] = "Triton cannot load model 'sentiment' version 2: corrupt model.pt"
    _refused(rolling, admin_pb2.RolloutRequest(version="2"), "corrupt model.pt")


def test_rollout_refuses_a_version_that_answers_differently(rolling: InProcessServer, versions: FakeVersions) -> None:
    versions.add(with_expectations(fake_model(name="sentiment", version="3"), TEXTS, shift=0.5))
    _refused(rolling, admin_pb2.RolloutRequest(version="3"), "answers its export's texts differently")
    assert ("sentiment", "3") in versions.retired  # loaded for the check, unloaded after it failed


def test_rollout_refuses_another_label_set_unless_asked(rolling: InProcessServer, versions: FakeVersions) -> None:
    versions.add(with_expectations(fake_model(EMOTIONS, name="sentiment", version="3"), TEXTS))
    _refused(rolling, admin_pb2.RolloutRequest(version="3"), "pass allow_label_change")
    rolled = admin(rolling).Rollout(admin_pb2.RolloutRequest(version="3", allow_label_change=True), timeout=30)
    assert rolled.model_version == "3"
    response = stub(rolling.target).Classify(pb.ClassifyRequest(texts=TEXTS), timeout=5)
    assert response.model_version == "3" and {r.label for r in response.results} <= set(EMOTIONS)


def test_rollout_of_unknown_model_or_version(rolling: InProcessServer) -> None:
    with pytest.raises(grpc.RpcError) as missing:
        admin(rolling).Rollout(admin_pb2.RolloutRequest(model="toxicity"), timeout=30)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.RpcError) as first:
        admin(rolling).Rollback(admin_pb2.RollbackRequest(), timeout=30)
    assert first.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "no version before 1" in (first.value.details() or "")


def test_admin_is_not_on_the_public_port(rolling: InProcessServer) -> None:
    channel = grpc.insecure_channel(rolling.target)
    public = admin_pb2_grpc.ModelAdminServiceStub(channel)  # type: ignore[no-untyped-call]
    with pytest.raises(grpc.RpcError) as refused:
        public.Rollout(admin_pb2.RolloutRequest(), timeout=5)
    assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_admin_needs_the_api_key(versions: FakeVersions) -> None:
    model, backend = versions.versions[("sentiment", "1")]
    with InProcessServer(backend, model, source=versions, api_key="k3y") as server:
        with pytest.raises(grpc.RpcError) as refused:
            admin(server).Rollout(admin_pb2.RolloutRequest(), timeout=5)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert versions.started == []
        rolled = admin(server).Rollout(admin_pb2.RolloutRequest(), metadata=(("x-api-key", "k3y"),), timeout=30)
        assert rolled.model_version == "2"


@pytest.mark.parametrize(
    ("current", "ready", "before", "expected"),
    [
        ("1", ["1"], None, None),  # the first look only remembers
        ("1", ["1", "2"], None, None),  # ready before this process looked: not "new"
        ("1", ["1", "2"], {"1"}, "2"),  # a newer version has just become ready: follow it
        ("1", ["1", "2", "3"], {"1"}, "3"),  # the newest of those
        ("1", ["1", "2"], {"1", "2"}, None),  # an operator rolled back to 1 while 2 stays ready: it sticks
        ("2", ["1", "2"], {"2"}, None),  # an older version appearing is no reason to switch
        ("2", ["1"], {"1", "2"}, "1"),  # the current one is gone: the newest ready one takes over
        ("2", [], {"2"}, None),  # nothing ready (Triton restarting): wait
    ],
)
def test_which_version_a_front_end_that_follows_triton_switches_to(
    current: str, ready: list[str], before: set[str] | None, expected: str | None
) -> None:
    from sentiment_server.service import version_to_follow

    assert version_to_follow(current, ready, before) == expected
