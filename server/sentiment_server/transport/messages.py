"""proto <-> domain: requests' options in, the pipeline's results out as typed responses."""

from __future__ import annotations

from typing import Any

from sentiment.v1 import sentiment_pb2 as pb

from ..core.pipeline import ClassifyOutput, Truncation
from ..core.tokenization import EncodedText
from ..errors import InvalidInput
from ..model_artifact import MULTI_LABEL, ModelInfo

_TRUNCATION = {
    pb.TRUNCATION_STRATEGY_UNSPECIFIED: Truncation.TRUNCATE,
    pb.TRUNCATION_STRATEGY_TRUNCATE: Truncation.TRUNCATE,
    pb.TRUNCATION_STRATEGY_REJECT: Truncation.REJECT,
}


def texts_in(request: Any) -> int:
    """Texts a request carries, for admission (0 for requests without texts)."""
    if isinstance(request, pb.ClassifyStreamRequest):
        request = request.request
    return len(getattr(request, "texts", ()))


def truncation(options: pb.TruncationOptions) -> Truncation:
    try:
        return _TRUNCATION[options.strategy]
    except KeyError:
        raise InvalidInput(f"unknown truncation strategy {options.strategy}") from None


def classify_response(output: ClassifyOutput, rid: str, model_name: str, model_version: str) -> pb.ClassifyResponse:
    t = output.timings
    return pb.ClassifyResponse(
        results=[
            pb.Classification(
                label=r.labels[0].label,
                score=r.labels[0].score,
                scores=[pb.LabelScore(label=x.label, score=x.score, label_id=x.label_id) for x in r.labels],
                logits=r.logits,
                num_tokens=r.num_tokens,
                truncated=r.truncated,
            )
            for r in output.results
        ],
        model_name=model_name,
        model_version=model_version,
        request_id=rid,
        timings=pb.Timings(
            tokenize_us=int(t.tokenize_s * 1e6),
            queue_us=int(t.queue_s * 1e6),
            inference_us=int(t.inference_s * 1e6),
            total_us=int(t.total_s * 1e6),
        ),
    )


def tokenize_response(encoded: list[EncodedText], pad: bool, pad_id: int, rid: str) -> pb.TokenizeResponse:
    length = max(len(e.ids) for e in encoded) if pad else 0
    results = []
    for e in encoded:
        ids = [int(i) for i in e.ids]
        padding = max(0, length - len(ids))
        results.append(
            pb.TokenizedText(
                input_ids=ids + [pad_id] * padding,
                attention_mask=[1] * len(ids) + [0] * padding,
                tokens=list(e.tokens),
                truncated=e.truncated,
            )
        )
    return pb.TokenizeResponse(results=results, request_id=rid)


def model_info_response(info: ModelInfo) -> pb.GetModelInfoResponse:
    return pb.GetModelInfoResponse(
        model_name=info.model_name,
        model_version=info.version,
        source_checkpoint=info.source,
        labels=info.labels,
        max_sequence_length=info.max_length,
        problem_type=(
            pb.PROBLEM_TYPE_MULTI_LABEL_CLASSIFICATION
            if info.problem_type == MULTI_LABEL
            else pb.PROBLEM_TYPE_SINGLE_LABEL_CLASSIFICATION
        ),
        backend=info.backend,
        dtype=info.dtype,
        demo=info.demo,
    )
