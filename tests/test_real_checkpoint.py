"""The seed's own figures, on the real checkpoint when a local copy is given.

Set SENTIMENT_REAL_CHECKPOINT to a local directory of
distilbert-base-uncased-finetuned-sst-2-english (no network is used).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import SEED, sentiment_server, start_service
from sentiment_client import SentimentClient

REAL = os.environ.get("SENTIMENT_REAL_CHECKPOINT", "")

pytestmark = [
    pytest.mark.triton,
    pytest.mark.skipif(
        not REAL or not Path(REAL).is_dir(),
        reason="SENTIMENT_REAL_CHECKPOINT is not set to a local copy of "
        "distilbert-base-uncased-finetuned-sst-2-english; the seed's logits hold only for that checkpoint",
    ),
]


def test_seed_logits_and_probabilities(tmp_path: Path):
    from sentiment_server.backend.triton_process import EmbeddedTriton

    repository = tmp_path / "repo"
    subprocess.run(
        sentiment_server("export", "--checkpoint", REAL, "--model-repository", str(repository)),
        check=True,
        timeout=600,
    )
    with EmbeddedTriton(repository, grpc_port=0, metrics_port=0) as triton:
        triton.wait_ready("sentiment", timeout_s=300)
        service = start_service(repository, "sentiment", triton.grpc_url, tmp_path)
        try:
            with SentimentClient(service.target) as client:
                results = client.classify(SEED["texts"], return_logits=True).results
        finally:
            service.stop()
    by_id = [sorted(r.scores, key=lambda s: s.label_id) for r in results]
    np.testing.assert_allclose([list(r.logits) for r in results], SEED["logits"], atol=1e-4)
    np.testing.assert_allclose([[s.score for s in row] for row in by_id], SEED["probabilities"], rtol=2e-4)
    assert [r.label for r in results] == SEED["labels"]
