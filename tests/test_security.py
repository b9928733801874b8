"""The front-end's channel to a Triton that requires mutual TLS: needs the real Triton.

TLS, mTLS, API keys and reflection of the front-end itself are checked
in-process in tests/fast/test_front_end_security.py; the certificates come
from tests/fast/pki.py (the openssl CLI).
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from conftest import sentiment_server, start_service
from fast.pki import Pki, make_pki
from sentiment_client import SentimentClient

pytestmark = pytest.mark.triton


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


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
                "serve", "--port", "0", "--admin-port", "0", "--models", "sentiment",
                "--model-repository", str(model_repository),
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
