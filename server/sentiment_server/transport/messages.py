"""proto <-> domain: requests' options in, the pipeline's results out as typed responses."""

from __future__ import annotations

from typing import Any

from sentiment.v1 import sentiment_pb2 as pb

from ..core.pipeline import ClassifyOptions, ClassifyOutput, Truncation, WindowResult
from ..core.postprocess import RankedLabel
from ..core.served_models import ServedVersion
from ..core.tokenization import EncodedText, Pair
from ..core.windows import Aggregation
from ..errors import InvalidInput
from ..model_artifact import MULTI_LABEL, ModelInfo

_TRUNCATION = {
    pb.TRUNCATION_STRATEGY_UNSPECIFIED: Truncation.TRUNCATE,
    pb.TRUNCATION_STRATEGY_TRUNCATE: Truncation.TRUNCATE,
    pb.TRUNCATION_STRATEGY_REJECT: Truncation.REJECT,
    pb.TRUNCATION_STRATEGY_WINDOW: Truncation.WINDOW,
}
_AGGREGATION = {
    pb.WINDOW_AGGREGATION_UNSPECIFIED: Aggregation.MEAN,
    pb.WINDOW_AGGREGATION_MEAN: Aggregation.MEAN,
    pb.WINDOW_AGGREGATION_MEAN_LOGITS: Aggregation.MEAN_LOGITS,
    pb.WINDOW_AGGREGATION_MAX: Aggregation.MAX,
}


def texts_in(request: Any) -> int:
    """Texts (or pairs) a request carries, for admission (0 for requests without texts)."""
    if isinstance(request, pb.ClassifyStreamRequest):
        request = request.request
    return len(getattr(request, "texts", ())) + len(getattr(request, "pairs", ()))


def model_in(request: Any) -> str:
    """The model a request names ("" = the default model; requests without the field have none)."""
    if isinstance(request, pb.ClassifyStreamRequest):
        request = request.request
    return str(getattr(request, "model", ""))


def inputs(request: pb.ClassifyRequest | pb.TokenizeRequest) -> list[str] | list[Pair]:
    """The request's texts, or its pairs as (text, text_pair)."""
    if not request.pairs:
        return list(request.texts)
    if request.texts:
        raise InvalidInput("set texts or pairs, not both")
    return [(pair.text, pair.text_pair) for pair in request.pairs]


def truncation(options: pb.TruncationOptions) -> Truncation:
    try:
        strategy = _TRUNCATION[options.strategy]
    except KeyError:
        raise InvalidInput(f"unknown truncation strategy {options.strategy}") from None
    if strategy is not Truncation.WINDOW and (options.HasField("stride") or options.aggregation):
        raise InvalidInput("stride and aggregation apply to truncation strategy WINDOW only")
    return strategy


def stride(options: pb.TruncationOptions) -> int | None:
    return options.stride if options.HasField("stride") else None


def classify_options(request: pb.ClassifyRequest) -> ClassifyOptions:
    options = request.truncation
    strategy = truncation(options)
    try:
        aggregation = _AGGREGATION[options.aggregation]
    except KeyError:
        raise InvalidInput(f"unknown window aggregation {options.aggregation}") from None
    if request.return_windows and strategy is not Truncation.WINDOW:
        raise InvalidInput("return_windows applies to truncation strategy WINDOW only")
    return ClassifyOptions(
        top_k=request.top_k,
        return_logits=request.return_logits,
        max_length=options.max_length,
        truncation=strategy,
        stride=stride(options),
        aggregation=aggregation,
        return_windows=request.return_windows,
    )


def _label_scores(labels: list[RankedLabel]) -> list[pb.LabelScore]:
    return [pb.LabelScore(label=x.label, score=x.score, label_id=x.label_id) for x in labels]


def _window(w: WindowResult) -> pb.WindowResult:
    return pb.WindowResult(
        scores=_label_scores(w.labels), start_token=w.start_token, end_token=w.end_token, num_tokens=w.num_tokens
    )


def classify_response(output: ClassifyOutput, rid: str, model_name: str, model_version: str) -> pb.ClassifyResponse:
    t = output.timings
    return pb.ClassifyResponse(
        results=[
            pb.Classification(
                label=r.labels[0].label,
                score=r.labels[0].score,
                scores=_label_scores(r.labels),
                logits=r.logits,
                num_tokens=r.num_tokens,
                truncated=r.truncated,
                num_windows=r.num_windows,
                windows=[_window(w) for w in r.windows],
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
    """`pad`: every text (and window) padded to the longest of them."""
    length = max(len(w.ids) for e in encoded for w in e.windows) if pad else 0
    results = []
    for e in encoded:
        first, *rest = (_tokenized(w, length, pad_id) for w in e.windows)
        first.overflowing.extend(rest)
        results.append(first)
    return pb.TokenizeResponse(results=results, request_id=rid)


def _tokenized(e: EncodedText, length: int, pad_id: int) -> pb.TokenizedText:
    ids = e.ids.tolist()
    padding = max(0, length - len(ids))
    return pb.TokenizedText(
        input_ids=ids + [pad_id] * padding,
        attention_mask=[1] * len(ids) + [0] * padding,
        tokens=list(e.tokens),
        truncated=e.truncated,
        token_type_ids=[] if e.type_ids is None else e.type_ids.tolist() + [0] * padding,
    )


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
        inputs=info.inputs,
    )


def list_models_response(served: list[ServedVersion], default: str) -> pb.ListModelsResponse:
    return pb.ListModelsResponse(
        models=[
            pb.ModelSummary(
                name=v.name,
                model_version=v.version,
                labels=v.info.labels,
                source_checkpoint=v.info.source,
                ready=v.ready,
            )
            for v in served
        ],
        default_model=default,
    )
