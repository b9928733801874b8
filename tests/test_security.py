"""TLS, mTLS, API keys and reflection against real `sentiment-server serve` processes.

Certificates are made with the `openssl` CLI (a CA, a server certificate for
IP:127.0.0.1 and DNS:localhost, a client certificate, and a second CA that
nobody trusts). Each front-end here is started by the fixture that stops it.
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from conftest import Service, sentiment_server, start_service
from grpc_health.v1 import health_pb2, health_pb2_grpc
from sentiment.v1 import sentiment_pb2 as pb
from sentiment.v1 import sentiment_pb2_grpc as pb_grpc
from sentiment_client import SentimentClient, SentimentError
from sentiment_client.options import ClientOptions

pytestmark = pytest.mark.triton

API_KEY = "s3cret-key-for-tests"
CLIENT_CLI = Path(sys.executable).parent / "sentiment-client"


def _stub(channel: grpc.Channel) -> pb_grpc.SentimentServiceStub:
    return pb_grpc.SentimentServiceStub(channel)  # type: ignore[no-untyped-call]  # generated code


# --------------------------------------------------------------------------- certificates


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_cert: Path  # a client certificate signed by a CA the server does not trust
    rogue_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def _make_ca(d: Path, name: str) -> None:
    _openssl(
        "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN={name}",
        "-addext", "basicConstraints=critical,CA:TRUE",
        "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=d,
    )  # fmt: skip


def _make_leaf(d: Path, name: str, ca: str, extensions: str) -> None:
    (d / f"{name}.ext").write_text(extensions)
    _openssl(
        "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}",
        cwd=d,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
        "-out", f"{name}.pem", "-days", "2", "-extfile", f"{name}.ext",
        cwd=d,
    )  # fmt: skip


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    if shutil.which("openssl") is None:
        pytest.skip("the openssl CLI is not installed")
    d = tmp_path_factory.mktemp("pki")
    _make_ca(d, "ca")
    _make_ca(d, "rogue-ca")
    _make_leaf(
        d,
        "server",
        "ca",
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )
    client_ext = "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n"
    _make_leaf(d, "client", "ca", client_ext)
    _make_leaf(d, "rogue", "rogue-ca", client_ext)
    return Pki(
        d / "ca.pem",
        d / "server.pem",
        d / "server.key",
        d / "client.pem",
        d / "client.key",
        d / "rogue.pem",
        d / "rogue.key",
    )


# --------------------------------------------------------------------------- front-ends


def _started(model_repository: Path, triton: object, logs: Path, *flags: str) -> Iterator[Service]:
    service = start_service(model_repository, "sentiment", triton.grpc_url, logs, *flags)  # type: ignore[attr-defined]
    try:
        yield service
    finally:
        assert service.stop() == 0, service.log.read_text()[-2000:]


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("security-logs")


@pytest.fixture(scope="module")
def tls_service(pki: Pki, model_repository: Path, triton: object, logs: Path) -> Iterator[Service]:
    """TLS (server authentication only), reflection off."""
    tls = ("--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key))
    yield from _started(model_repository, triton, logs, *tls, "--no-reflection")


@pytest.fixture(scope="module")
def mtls_service(pki: Pki, model_repository: Path, triton: object, logs: Path) -> Iterator[Service]:
    """mTLS: clients must present a certificate signed by the test CA."""
    tls = ("--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key), "--tls-client-ca", str(pki.ca))
    yield from _started(model_repository, triton, logs, *tls)


@pytest.fixture(scope="module")
def key_service(model_repository: Path, triton: object, logs: Path) -> Iterator[Service]:
    """Plaintext with an API key and a metrics endpoint (to see what the server did)."""
    yield from _started(model_repository, triton, logs, "--api-key", API_KEY, "--metrics-port", "0")


@pytest.fixture(scope="module")
def tls_key_service(pki: Pki, model_repository: Path, triton: object, logs: Path) -> Iterator[Service]:
    """TLS and an API key together, for the CLI."""
    tls = ("--tls-cert", str(pki.server_cert), "--tls-key", str(pki.server_key))
    yield from _started(model_repository, triton, logs, *tls, "--api-key", API_KEY)


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


def test_tls_classify_works_with_the_ca(tls_service: Service, pki: Pki) -> None:
    with _client(tls_service.target, ca_cert=str(pki.ca)) as client:
        _classify_ok(client)
        assert client.health() == "SERVING"


def test_tls_certificate_is_valid_for_localhost_too(tls_service: Service, pki: Pki) -> None:
    """The DNS SAN: connect to 127.0.0.1 but verify the certificate as `localhost`."""
    with _client(tls_service.target, ca_cert=str(pki.ca), server_name_override="localhost") as client:
        _classify_ok(client)


def test_plaintext_client_to_tls_server_fails(tls_service: Service, pki: Pki) -> None:
    with _client(tls_service.target) as client, pytest.raises(SentimentError) as info:
        client.classify("hello", timeout=5)
    assert info.value.code == grpc.StatusCode.UNAVAILABLE
    with _client(tls_service.target, ca_cert=str(pki.ca)) as client:
        _classify_ok(client)


def test_tls_client_that_does_not_trust_the_ca_fails(tls_service: Service, pki: Pki) -> None:
    with _client(tls_service.target, ca_cert=str(pki.rogue_cert)) as client, pytest.raises(SentimentError) as info:
        client.classify("hello", timeout=5)
    assert info.value.code == grpc.StatusCode.UNAVAILABLE


def test_reflection_is_unimplemented_when_disabled(tls_service: Service, pki: Pki) -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    credentials = grpc.ssl_channel_credentials(root_certificates=pki.ca.read_bytes())
    with grpc.secure_channel(tls_service.target, credentials) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        responses = stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
        )
        with pytest.raises(grpc.RpcError) as info:
            list(responses)
    assert info.value.code() == grpc.StatusCode.UNIMPLEMENTED


# --------------------------------------------------------------------------- mTLS


def test_mtls_client_with_certificate_works(mtls_service: Service, pki: Pki) -> None:
    with _client(
        mtls_service.target, ca_cert=str(pki.ca), client_cert=str(pki.client_cert), client_key=str(pki.client_key)
    ) as client:
        _classify_ok(client)
        assert len(list(client.classify_stream([["a"], ["b"]]))) == 2


@pytest.mark.parametrize("who", ["no certificate", "certificate from an untrusted CA"])
def test_mtls_client_without_a_trusted_certificate_fails_and_the_server_keeps_serving(
    mtls_service: Service, pki: Pki, who: str
) -> None:
    extra = {} if who == "no certificate" else {"client_cert": str(pki.rogue_cert), "client_key": str(pki.rogue_key)}
    for _ in range(3):
        with _client(mtls_service.target, ca_cert=str(pki.ca), **extra) as client, pytest.raises(SentimentError) as e:
            client.classify("hello", timeout=5)
        assert e.value.code == grpc.StatusCode.UNAVAILABLE, e.value
    with _client(
        mtls_service.target, ca_cert=str(pki.ca), client_cert=str(pki.client_cert), client_key=str(pki.client_key)
    ) as client:
        _classify_ok(client)
    assert mtls_service.process.poll() is None


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
def test_missing_or_wrong_key_is_unauthenticated(key_service: Service, method: str) -> None:
    with grpc.insecure_channel(key_service.target) as channel:
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
def test_right_key_works(key_service: Service, method: str, metadata: tuple[tuple[str, str], ...]) -> None:
    with grpc.insecure_channel(key_service.target) as channel:
        assert _call(_stub(channel), method, metadata)


def test_python_client_sends_the_key(key_service: Service) -> None:
    with _client(key_service.target, api_key=API_KEY) as client:
        _classify_ok(client)
        assert client.model_info().model_name == "sentiment"
    with _client(key_service.target, api_key="wrong") as client, pytest.raises(SentimentError) as info:
        client.classify("hello")
    assert info.value.code == grpc.StatusCode.UNAUTHENTICATED


def test_health_needs_no_key(key_service: Service) -> None:
    with grpc.insecure_channel(key_service.target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for name in ("", "sentiment.v1.SentimentService"):
            response = stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
            assert response.status == health_pb2.HealthCheckResponse.SERVING


def _metrics(service: Service) -> dict[str, float]:
    match = re.search(r"metrics on (http://[\d.]+:\d+/metrics)", service.log.read_text())
    assert match, service.log.read_text()[-2000:]
    assert match.group(1).startswith("http://127.0.0.1:")
    with urllib.request.urlopen(match.group(1), timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    return samples


def _work_done(samples: dict[str, float]) -> dict[str, float]:
    """Everything the servicer counts: requests by method and code, texts, stage timings."""
    return {
        k: v
        for k, v in samples.items()
        if k.startswith(("sentiment_requests_total", "sentiment_texts_total", "sentiment_stage_seconds_count"))
    }


def test_unauthenticated_before_any_work(key_service: Service) -> None:
    """10,000 texts would be INVALID_ARGUMENT (too many texts); without the key it must not get that far."""
    before = _work_done(_metrics(key_service))
    with grpc.insecure_channel(key_service.target) as channel:
        stub = _stub(channel)
        for metadata in (BAD_KEYS["missing"], BAD_KEYS["wrong x-api-key"]):
            with pytest.raises(grpc.RpcError) as info:
                stub.Classify(pb.ClassifyRequest(texts=["some words"] * 10_000), metadata=metadata, timeout=10)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
            with pytest.raises(grpc.RpcError) as info:
                stub.Tokenize(pb.TokenizeRequest(texts=["some words"] * 10_000), metadata=metadata, timeout=10)
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert _work_done(_metrics(key_service)) == before
    # With the key the same request reaches the servicer and is refused there.
    with grpc.insecure_channel(key_service.target) as channel, pytest.raises(grpc.RpcError) as info:
        _stub(channel).Classify(
            pb.ClassifyRequest(texts=["some words"] * 10_000), metadata=(("x-api-key", API_KEY),), timeout=10
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_reflection_needs_the_key(key_service: Service) -> None:
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    request = reflection_pb2.ServerReflectionRequest(list_services="")
    with grpc.insecure_channel(key_service.target) as channel:
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


def test_cli_over_tls_with_api_key(tls_key_service: Service, pki: Pki) -> None:
    started = time.monotonic()
    flags = ("--target", tls_key_service.target, "--tls", "--ca-cert", str(pki.ca))
    done = _cli(*flags, "--api-key", API_KEY, "classify", "x")
    assert done.returncode == 0, done.stderr
    assert re.search(r"^x\s+(NEGATIVE|POSITIVE)\s+0\.\d{4}$", done.stdout, re.MULTILINE), done.stdout
    done = _cli(*flags, "--api-key", API_KEY, "classify", "--json", "x", "y")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count('"label"') >= 2
    done = _cli(*flags, "--api-key", "wrong", "classify", "x")
    assert done.returncode == 2
    assert "UNAUTHENTICATED" in done.stderr
    done = _cli("--target", tls_key_service.target, "--api-key", API_KEY, "classify", "x")  # no --tls
    assert done.returncode == 2
    assert "UNAVAILABLE" in done.stderr
    assert time.monotonic() - started < 30


# --------------------------------------------------------------------------- the channel to a remote Triton


def test_front_end_reaches_a_triton_that_requires_mutual_tls(pki: Pki, model_repository: Path, tmp_path: Path) -> None:
    from sentiment_server.backend.triton_process import EmbeddedTriton

    triton_tls = (
        "--grpc-use-ssl-mutual=true",
        f"--grpc-server-cert={pki.server_cert}",
        f"--grpc-server-key={pki.server_key}",
        f"--grpc-root-cert={pki.ca}",
    )
    with EmbeddedTriton(model_repository, grpc_port=0, metrics_port=0, extra_args=triton_tls) as triton:
        # Plaintext (or TLS without a client certificate) never sees the model ready.
        refused = subprocess.run(
            sentiment_server(
                "serve", "--port", "0", "--model-repository", str(model_repository),
                "--triton-url", triton.grpc_url, "--triton-tls-ca", str(pki.ca), "--startup-timeout-s", "3",
            ),
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert refused.returncode == 1
        assert "has no ready model 'sentiment'" in refused.stderr

        mtls = ("--triton-tls-ca", str(pki.ca), "--triton-tls-cert", str(pki.client_cert))
        service = start_service(
            model_repository, "sentiment", triton.grpc_url, tmp_path, *mtls, "--triton-tls-key", str(pki.client_key)
        )
        try:
            with SentimentClient(service.target) as client:
                assert client.classify(["over mutual TLS"]).results[0].label in {"NEGATIVE", "POSITIVE"}
        finally:
            assert service.stop() == 0
