"""TLS, mTLS, API keys and reflection against the in-process front-end.

The certificates come from pki.py (the openssl CLI). What needs a real
Triton (the front-end's own channel to a Triton that requires mTLS) stays in
tests/test_security.py.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from fake_backend import InProcessServer, health_statuses, wait_until
from fast.pki import Pki, make_pki
from grpc_health.v1 import health_pb2
from sentiment.v1 import sentiment_pb2 as pb
from sentiment.v1 import sentiment_pb2_grpc as pb_grpc
from sentiment_client import SentimentClient, SentimentError
from sentiment_client.options import ClientOptions

API_KEY = "s3cret-key-for-tests"
CLIENT_CLI = Path(sys.executable).parent / "sentiment-client"


def _stub(channel: grpc.Channel) -> pb_grpc.SentimentServiceStub:
    return pb_grpc.SentimentServiceStub(channel)  # type: ignore[no-untyped-call]  # generated code


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


# --------------------------------------------------------------------------- front-ends


@pytest.fixture(scope="module")
def tls_server(pki: Pki) -> Iterator[InProcessServer]:
    """TLS (server authentication only), reflection off."""
    with InProcessServer(tls_cert=str(pki.server_cert), tls_key=str(pki.server_key), reflection=False) as started:
        yield started


@pytest.fixture(scope="module")
def mtls_server(pki: Pki) -> Iterator[InProcessServer]:
    """mTLS: clients must present a certificate signed by the test CA."""
    with InProcessServer(
        tls_cert=str(pki.server_cert), tls_key=str(pki.server_key), tls_client_ca=str(pki.ca)
    ) as started:
        yield started


@pytest.fixture(scope="module")
def key_server() -> Iterator[InProcessServer]:
    """Plaintext with an API key."""
    with InProcessServer(api_key=API_KEY) as started:
        yield started


@pytest.fixture(scope="module")
def tls_key_server(pki: Pki) -> Iterator[InProcessServer]:
    """TLS and an API key together, for the CLI."""
    with InProcessServer(tls_cert=str(pki.server_cert), tls_key=str(pki.server_key), api_key=API_KEY) as started:
        yield started


def _client(target: str, **options: Any) -> SentimentClient:
    """A client that does not retry (an UNAVAILABLE here is the answer, not a blip) and reads no env."""
    base = ClientOptions(
        target=target, timeout_s=10.0, api_key=None, tls=False, ca_cert=None, client_cert=None, client_key=None
    )
    return SentimentClient(options=dataclasses.replace(base, max_attempts=1, **options))


def _classify_ok(client: SentimentClient) -> None:
    result = client.classify(["I love this", "I hate this"])
    assert len(result.results) == 2
    assert {r.label for r in result.results} <= {"NEGATIVE", "POSITIVE"}


# --------------------------------------------------------------------------- TLS


def test_tls_classify_works_with_the_ca(tls_server: InProcessServer, pki: Pki) -> None:
    with _client(tls_server.target, ca_cert=str(pki.ca)) as client:
        _classify_ok(client)
        assert client.health() == "SERVING"


def test_tls_certificate_is_valid_for_localhost_too(tls_server: InProcessServer, pki: Pki) -> None:
    """The DNS SAN: connect to 127.0.0.1 but verify the certificate as `localhost`."""
    with _client(tls_server.target, ca_cert=str(pki.ca), server_name_override="localhost") as client:
        _classify_ok(client)


def test_plaintext_client_to_tls_server_fails(tls_server: InProcessServer, pki: Pki) -> None:
    with _client(tls_server.target) as client, pytest.raises(SentimentError) as info:
        client.classify("hello", timeout=5)
    assert info.value.code == grpc.StatusCode.UNAVAILABLE
    with _client(tls_server.target, ca_cert=str(pki.ca)) as client:
        _classify_ok(client)


def test_tls_client_that_does_not_trust_the_ca_fails(tls_server: InProcessServer, pki: Pki) -> None:
    with _client(tls_server.target, ca_cert=str(pki.rogue_cert)) as client, pytest.raises(SentimentError) as info:
        client.classify("hello", timeout=5)
    assert info.value.code == grpc.StatusCode.UNAVAILABLE


def test_reflection_is_unimplemented_when_disabled(tls_server: InProcessServer, pki: Pki) -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    credentials = grpc.ssl_channel_credentials(root_certificates=pki.ca.read_bytes())
    with grpc.secure_channel(tls_server.target, credentials) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
        )
        with pytest.raises(grpc.RpcError) as info:
            list(responses)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


# --------------------------------------------------------------------------- mTLS


def test_mtls_client_with_certificate_works(mtls_server: InProcessServer, pki: Pki) -> None:
    with _client(
        mtls_server.target, ca_cert=str(pki.ca), client_cert=str(pki.client_cert), client_key=str(pki.client_key)
    ) as client:
        _classify_ok(client)
        assert len(list(client.classify_stream([["a"], ["b"]]))) == 2


@pytest.mark.parametrize("who", ["no certificate", "certificate from an untrusted CA"])
def test_mtls_client_without_a_trusted_certificate_fails_and_the_server_keeps_serving(
    mtls_server: InProcessServer, pki: Pki, who: str
) -> None:
    extra = {} if who == "no certificate" else {"client_cert": str(pki.rogue_cert), "client_key": str(pki.rogue_key)}
    for _ in range(3):
        with _client(mtls_server.target, ca_cert=str(pki.ca), **extra) as client, pytest.raises(SentimentError) as e:
            client.classify("hello", timeout=5)
        assert e.value.code == grpc.StatusCode.UNAVAILABLE, e.value
    with _client(
        mtls_server.target, ca_cert=str(pki.ca), client_cert=str(pki.client_cert), client_key=str(pki.client_key)
    ) as client:
        _classify_ok(client)
    assert mtls_server.front is not None and mtls_server.loop.is_running()


# --------------------------------------------------------------------------- API key


def _call(stub: pb_grpc.SentimentServiceStub, method: str, metadata: tuple[tuple[str, str], ...]) -> object:
    if method == "Classify":
        return stub.Classify(pb.ClassifyRequest(texts=["hello"]), metadata=metadata, timeout=10)
    if method == "Tokenize":
        return stub.Tokenize(pb.TokenizeRequest(texts=["hello"]), metadata=metadata, timeout=10)
    if method == "GetModelInfo":
        return stub.GetModelInfo(pb.GetModelInfoRequest(), metadata=metadata, timeout=10)
    stream = stub.ClassifyStream(
        iter([pb.ClassifyStreamRequest(request=pb.ClassifyRequest(texts=["hello"]), correlation_id="1")]),
        metadata=metadata,
        timeout=10,
    )
    return list(stream)


METHODS = ["Classify", "Tokenize", "GetModelInfo", "ClassifyStream"]
BAD_KEYS = {
    "missing": (),
    "wrong x-api-key": (("x-api-key", "not-the-key"),),
    "empty x-api-key": (("x-api-key", ""),),
    "key prefix": (("x-api-key", API_KEY[:-1]),),
    "wrong bearer": (("authorization", "Bearer not-the-key"),),
    "key without Bearer": (("authorization", API_KEY),),
}


@pytest.mark.parametrize("method", METHODS)
def test_missing_or_wrong_key_is_unauthenticated(key_server: InProcessServer, method: str) -> None:
    with grpc.insecure_channel(key_server.target) as channel:
        stub = _stub(channel)
        for name, metadata in BAD_KEYS.items():
            with pytest.raises(grpc.RpcError) as info:
                _call(stub, method, metadata)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED, (name, info.value)
            assert API_KEY not in (info.value.details() or "")


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    "metadata",
    [(("x-api-key", API_KEY),), (("authorization", f"Bearer {API_KEY}"),), (("authorization", f"bearer {API_KEY}"),)],
    ids=["x-api-key", "Bearer", "bearer"],
)
def test_right_key_works(key_server: InProcessServer, method: str, metadata: tuple[tuple[str, str], ...]) -> None:
    with grpc.insecure_channel(key_server.target) as channel:
        assert _call(_stub(channel), method, metadata)


def test_python_client_sends_the_key(key_server: InProcessServer) -> None:
    with _client(key_server.target, api_key=API_KEY) as client:
        _classify_ok(client)
        assert client.model_info().model_name == "sentiment"
    with _client(key_server.target, api_key="wrong") as client, pytest.raises(SentimentError) as info:
        client.classify("hello")
    assert info.value.code == grpc.StatusCode.UNAUTHENTICATED


def test_health_needs_no_key(key_server: InProcessServer) -> None:
    assert health_statuses(key_server.target) == [health_pb2.HealthCheckResponse.SERVING] * 2


def _samples(server: InProcessServer) -> dict[str, float]:
    """The server's registry as `name{label="value",...}` -> value, like the /metrics text."""
    assert server.front is not None
    samples = {}
    for metric in server.front.metrics.registry.collect():
        for s in metric.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(s.labels.items()))
            samples[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return samples


def _work_done(samples: dict[str, float]) -> dict[str, float]:
    """Everything the servicer counts: requests by method and code, texts, stage timings."""
    return {
        k: v
        for k, v in samples.items()
        if k.startswith(("sentiment_requests_total", "sentiment_texts_total", "sentiment_stage_seconds_count"))
    }


def _refused(method: str) -> str:
    return f'sentiment_requests_total{{code="UNAUTHENTICATED",method="{method}",model=""}}'


def test_unauthenticated_before_any_work(key_server: InProcessServer) -> None:
    """10,000 texts would be INVALID_ARGUMENT (too many texts); without the key it must not get that far.

    A refusal is counted (sentiment_requests_total, code UNAUTHENTICATED) like any other; nothing else moves,
    and no batch reaches the backend.
    """
    before = _work_done(_samples(key_server))
    batches = len(key_server.backend.batches)
    with grpc.insecure_channel(key_server.target) as channel:
        stub = _stub(channel)
        for metadata in (BAD_KEYS["missing"], BAD_KEYS["wrong x-api-key"]):
            with pytest.raises(grpc.RpcError) as info:
                stub.Classify(pb.ClassifyRequest(texts=["some words"] * 10_000), metadata=metadata, timeout=10)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.RpcError) as info:
                stub.Tokenize(pb.TokenizeRequest(texts=["some words"] * 10_000), metadata=metadata, timeout=10)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    expected = dict(before)
    for method in ("Classify", "Tokenize"):
        expected[_refused(method)] = expected.get(_refused(method), 0.0) + 2
    # Requests are counted just after their reply leaves.
    assert wait_until(lambda: _work_done(_samples(key_server)) == expected), (
        _work_done(_samples(key_server)),
        expected,
    )
    assert len(key_server.backend.batches) == batches
    # With the key the same request reaches the servicer and is refused there.
    with grpc.insecure_channel(key_server.target) as channel, pytest.raises(grpc.RpcError) as info:
        _stub(channel).Classify(
            pb.ClassifyRequest(texts=["some words"] * 10_000), metadata=(("x-api-key", API_KEY),), timeout=10
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_reflection_needs_the_key(key_server: InProcessServer) -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    request = reflection_pb2.ServerReflectionRequest(list_services="")
    with grpc.insecure_channel(key_server.target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            list(stub.ServerReflectionInfo(iter([request]), timeout=10))
        assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
        responses = stub.ServerReflectionInfo(iter([request]), metadata=(("x-api-key", API_KEY),), timeout=10)
        names = {s.name for r in responses for s in r.list_services_response.service}
    assert "sentiment.v1.SentimentService" in names


# --------------------------------------------------------------------------- the CLI


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENTIMENT_")}
    return subprocess.run([str(CLIENT_CLI), *args], capture_output=True, text=True, timeout=30, env=env)


def test_cli_over_tls_with_api_key(tls_key_server: InProcessServer, pki: Pki) -> None:
    started = time.monotonic()
    flags = ("--target", tls_key_server.target, "--tls", "--ca-cert", str(pki.ca))
    done = _cli(*flags, "--api-key", API_KEY, "classify", "x")
    assert done.returncode == 0, done.stderr
    assert re.search(r"^x\s+(NEGATIVE|POSITIVE)\s+0\.\d{4}$", done.stdout, re.MULTILINE), done.stdout
    done = _cli(*flags, "--api-key", API_KEY, "classify", "--json", "x", "y")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count('"label"') >= 2
    done = _cli(*flags, "--api-key", "wrong", "classify", "x")
    assert done.returncode == 2
    assert "UNAUTHENTICATED" in done.stderr
    done = _cli("--target", tls_key_server.target, "--api-key", API_KEY, "classify", "x")  # no --tls
    assert done.returncode == 2
    assert "UNAVAILABLE" in done.stderr
    assert time.monotonic() - started < 30
