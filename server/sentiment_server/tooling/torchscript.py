"""Checkpoint -> verified TorchScript: wrap, cast or quantize, trace, check parity, save.

`trace_and_verify` traces a wrapper `forward(input_ids, attention_mask[,
token_type_ids]) -> float32 logits` (the checkpoint's `inputs`) in the
export's dtype and accepts the trace only when it matches the eager fp32 model
on a fixed set of texts, and of text pairs for a model that takes segment ids;
`save_checked` writes it and checks that the file reproduces it;
`expected_logits` runs the saved file on EXPECTATION_TEXTS, the reference
answers model_info.json records for the front-end to replay on a new version
before it serves it. Nothing here touches the model repository.

Requires the `export` extra (torch, transformers).
"""

from __future__ import annotations

import copy
import logging
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..model_artifact import ATTENTION_MASK, INPUT_IDS, TOKEN_TYPE_IDS, uses_sigmoid
from .checkpoint_loading import Checkpoint
from .export_error import ExportError

if TYPE_CHECKING:
    import torch
    from tokenizers import Tokenizer

logger = logging.getLogger(__name__)

# Parity tolerances, checked before anything is written.
FP32_MAX_ABS_LOGIT_DIFF = 1e-4
LOW_PRECISION_MAX_PROB_DIFF = 0.02
# model.pt as read back against the trace it was saved from.
SAVED_MAX_ABS_DIFF = 1e-5

# Varied on purpose: empty, one word, punctuation, accents and CJK (the
# normalizer), numbers, a long text (position embeddings), repetition.
PARITY_TEXTS: tuple[str, ...] = (
    "I've been waiting for a HuggingFace course my whole life.",
    "I hate this so much!",
    "",
    "ok",
    "Crème brûlée à Paris, 東京 and naïve café-goers; $12.50 (or €11) per slice?!",
    "The plot was predictable, the acting wooden, and yet I could not stop watching "
    "until the very last scene, which surprised everyone in the theatre. " * 4,
    "no no no no no no no no no no no no no no no no no no no no yes",
    "Support answered within 5 minutes: 10/10, would recommend to friends & family.",
)
# (first text, count) slices of PARITY_TEXTS: batch sizes 1, 2, 3 and 8,
# each padded to its own longest text.
PARITY_BATCHES: tuple[tuple[int, int], ...] = ((3, 1), (0, 2), (5, 3), (0, 8))
# For models that take segment ids: the second text of each pair has type 1.
# An empty second text, a long one (the types reach far positions), CJK.
PARITY_PAIRS: tuple[tuple[str, str], ...] = (
    ("A man is playing a guitar on stage.", "Someone is performing music."),
    ("The cat sat on the mat.", ""),
    ("ok", "The plot was predictable and the acting wooden, yet I could not stop watching. " * 3),
    ("Crème brûlée à Paris?", "東京 and naïve café-goers, $12.50 per slice!"),
)
PARITY_PAIR_BATCHES: tuple[tuple[int, int], ...] = ((0, 1), (0, 4))

# Export-time expectations (ModelInfo.expected_*): short English texts of different lengths, each its own
# batch of one, truncated to the model's max_length and not padded, as the front-end replays them.
EXPECTATION_TEXTS: tuple[str, ...] = (
    "Great service.",
    "The food was cold and the waiter ignored us for most of the evening.",
    "I expected very little from this film, yet the story, the music and the actors kept me watching "
    "from the first scene to the last, and I would happily see it again with friends.",
)
# How far a replay (Triton running model.pt, its own batching and kernels) may be from the recorded logits.
EXPECTED_ATOL = {"fp32": 1e-3, "int8": 1e-3, "bf16": 3e-2, "fp16": 3e-2}


def _wrapper_class(inputs: Sequence[str]) -> type[Any]:
    """The wrapper whose forward() takes exactly `inputs`: the libtorch backend binds inputs by argument name."""
    import torch

    class LogitsBase(torch.nn.Module):
        """Float32 logits of the wrapped model.

        With `mask_4d` the padding mask is handed to the model as an additive
        [batch, 1, 1, length] mask built from the input. transformers 5 builds
        its own mask with `torch.arange(..., device=<constant>)`, which a trace
        records as a fixed device: the artifact would then run only where it
        was traced. The 4-D mask keeps the trace device-free.
        """

        def __init__(self, model: torch.nn.Module, *, mask_4d: bool, mask_dtype: torch.dtype) -> None:
            super().__init__()
            self.model = model
            self.mask_4d = mask_4d
            self.mask_dtype = mask_dtype
            self.mask_min = float(torch.finfo(mask_dtype).min)

        def logits(
            self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor | None
        ) -> torch.Tensor:
            mask = attention_mask
            if self.mask_4d:
                keep = attention_mask[:, None, None, :].to(self.mask_dtype)
                mask = (1.0 - keep) * self.mask_min
            segments = {} if token_type_ids is None else {TOKEN_TYPE_IDS: token_type_ids}
            outputs = self.model(input_ids=input_ids, attention_mask=mask, return_dict=False, **segments)
            logits: torch.Tensor = outputs[0]
            return logits.float()

    class LogitsModule(LogitsBase):
        """`forward(input_ids, attention_mask) -> float32 logits`."""

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            return self.logits(input_ids, attention_mask, None)

    class SegmentLogitsModule(LogitsBase):
        """`forward(input_ids, attention_mask, token_type_ids) -> float32 logits`."""

        def forward(
            self, input_ids: torch.Tensor, attention_mask: torch.Tensor, token_type_ids: torch.Tensor
        ) -> torch.Tensor:
            return self.logits(input_ids, attention_mask, token_type_ids)

    return SegmentLogitsModule if TOKEN_TYPE_IDS in inputs else LogitsModule


@dataclass(frozen=True)
class _Batch:
    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    token_type_ids: torch.Tensor | None = None  # only for a model that takes them

    def args(self) -> tuple[torch.Tensor, ...]:
        """The traced forward()'s arguments, in ModelInfo.inputs order."""
        base = (self.input_ids, self.attention_mask)
        return base if self.token_type_ids is None else (*base, self.token_type_ids)


def _parity_batches(ckpt: Checkpoint, device: torch.device) -> list[_Batch]:
    """The parity set, tokenized by the HF tokenizer; the exported tokenizer.json must agree.

    A model that takes segment ids gets the text pairs too, after the texts.
    """
    from tokenizers import Tokenizer

    standalone = Tokenizer.from_str(ckpt.tokenizer_json)
    standalone.enable_truncation(max_length=ckpt.max_length)
    pad_token = ckpt.tokenizer.pad_token or ""
    standalone.enable_padding(pad_id=ckpt.pad_token_id, pad_token=pad_token)

    groups: list[tuple[list[str], list[str] | None]] = [
        (list(PARITY_TEXTS[start : start + count]), None) for start, count in PARITY_BATCHES
    ]
    if TOKEN_TYPE_IDS in ckpt.inputs:
        for start, count in PARITY_PAIR_BATCHES:
            pairs = PARITY_PAIRS[start : start + count]
            groups.append(([a for a, _ in pairs], [b for _, b in pairs]))
    return [_encode(ckpt, standalone, texts, text_pairs, device) for texts, text_pairs in groups]


def _encode(
    ckpt: Checkpoint, standalone: Tokenizer, texts: list[str], text_pairs: list[str] | None, device: torch.device
) -> _Batch:
    """One padded batch by the HF tokenizer, after checking that `standalone` (tokenizer.json) gives the same."""
    segments = TOKEN_TYPE_IDS in ckpt.inputs
    enc = ckpt.tokenizer(
        texts, text_pairs, padding=True, truncation=True, max_length=ckpt.max_length, return_tensors="pt"
    )
    rows = texts if text_pairs is None else list(zip(texts, text_pairs, strict=True))
    mine = standalone.encode_batch(rows)
    same = [e.ids for e in mine] == enc[INPUT_IDS].tolist()
    same = same and [e.attention_mask for e in mine] == enc[ATTENTION_MASK].tolist()
    if segments:
        same = same and [e.type_ids for e in mine] == enc[TOKEN_TYPE_IDS].tolist()
    if not same:
        raise ExportError(
            "the exported tokenizer.json does not reproduce the checkpoint's tokenizer "
            f"on {rows!r}: it does part of its work outside `tokenizers`, so the front-end cannot reproduce it"
        )
    return _Batch(
        enc[INPUT_IDS].to(device),
        enc[ATTENTION_MASK].to(device),
        enc[TOKEN_TYPE_IDS].to(device) if segments else None,
    )


def trace_and_verify(
    ckpt: Checkpoint, dtype: str, device: torch.device
) -> tuple[torch.jit.ScriptModule, dict[str, str]]:
    """Trace the wrapper and check it against the eager fp32 model; nothing is written.

    Returns the trace and what ModelInfo.extra records about it.
    """
    import torch

    # int8 keeps fp32 activations: only the Linear weights are int8.
    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "int8": torch.float32}[dtype]
    reference_model = ckpt.model.to(device)
    batches = _parity_batches(ckpt, device)
    with torch.inference_mode():
        references = [reference_model(**_as_kwargs(b), return_dict=False)[0].float() for b in batches]

    if dtype == "int8":
        model = _quantize_dynamic(reference_model)
    elif torch_dtype != torch.float32:
        model = copy.deepcopy(reference_model).to(torch_dtype)
    else:
        model = reference_model
    wrapper_cls = _wrapper_class(ckpt.inputs)
    failures: list[str] = []
    for mask_4d in (True, False):
        wrapper = wrapper_cls(model, mask_4d=mask_4d, mask_dtype=torch_dtype).eval()
        try:
            traced = _trace(wrapper, batches)
            worst = _check_parity(traced, batches, references, dtype, ckpt.problem_type)
        except ExportError as exc:
            failures.append(f"{'4-D' if mask_4d else '2-D'} mask: {exc}")
            continue
        except Exception as exc:  # the model rejects a 4-D mask, tracing fails, ...
            failures.append(f"{'4-D' if mask_4d else '2-D'} mask: {type(exc).__name__}: {exc}")
            continue
        devices = sorted(set(re.findall(r'Device = prim::Constant\[value="([^"]+)"\]', str(traced.inlined_graph))))
        logger.info(
            "trace parity ok (%s mask, %s, worst %s); device constants in the trace: %s",
            "4-D" if mask_4d else "2-D",
            dtype,
            worst,
            devices or "none",
        )
        extra = {
            "attention_mask": "4d-additive" if mask_4d else "2d",
            "device_constants": ",".join(devices),
            "num_labels": str(len(ckpt.labels)),
            "parity": worst,
            "torch_version": torch.__version__,
            "trace_device": str(device),
            "transformers_version": _transformers_version(),
            "vocab_size": str(ckpt.model.get_input_embeddings().num_embeddings),
        }
        type_vocab_size = getattr(ckpt.config, "type_vocab_size", None)
        if TOKEN_TYPE_IDS in ckpt.inputs and type_vocab_size:
            extra["type_vocab_size"] = str(int(type_vocab_size))  # model.py checks the segment ids against it
        return traced, extra
    raise ExportError("the TorchScript trace does not match the eager model: " + "; ".join(failures))


def _quantize_dynamic(model: torch.nn.Module) -> torch.nn.Module:
    """A copy whose Linear layers hold int8 weights; activations are quantized per call.

    On CPUs with AVX512-VNNI this is several times faster than fp32 for
    DistilBERT (bench/), where bf16 without AMX is slower than fp32. The
    parity check decides whether the loss of precision is acceptable for this
    checkpoint.
    """
    import torch

    quantize: Callable[..., torch.nn.Module] = torch.ao.quantization.quantize_dynamic
    with warnings.catch_warnings():  # torch.ao.quantization is deprecated in favour of torchao
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=r".*quantize_per_tensor.*", category=UserWarning)
        # Per output channel: a scale per row keeps small layers accurate.
        qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
        return quantize(copy.deepcopy(model), {torch.nn.Linear: qconfig}, dtype=torch.qint8)


def _as_kwargs(batch: _Batch) -> dict[str, torch.Tensor]:
    kwargs = {INPUT_IDS: batch.input_ids, ATTENTION_MASK: batch.attention_mask}
    if batch.token_type_ids is not None:
        kwargs[TOKEN_TYPE_IDS] = batch.token_type_ids
    return kwargs


@contextmanager
def _quiet_torchscript() -> Iterator[None]:
    """torch >= 2.10 marks torch.jit deprecated; TorchScript is still what the libtorch backend runs."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.", category=DeprecationWarning)
        yield


def _trace(wrapper: torch.nn.Module, batches: Sequence[_Batch]) -> torch.jit.ScriptModule:
    import torch

    # Two texts of different lengths: the example has real padding.
    example = batches[1]
    with torch.no_grad(), _quiet_torchscript():
        # "Converting a tensor to a Python boolean might cause the trace to be
        # incorrect": the parity check below is what decides.
        warnings.simplefilter("ignore", category=getattr(torch.jit, "TracerWarning", Warning))
        trace: Callable[..., Any] = torch.jit.trace  # untyped in torch's stubs
        traced = trace(wrapper, example.args(), check_trace=False)
    assert isinstance(traced, torch.jit.ScriptModule)
    return traced


def _check_parity(
    traced: torch.jit.ScriptModule,
    batches: Sequence[_Batch],
    references: Sequence[torch.Tensor],
    dtype: str,
    problem_type: str,
) -> str:
    """Raise ExportError unless the trace matches the references; returns the worst difference."""
    import torch

    worst_logit = 0.0
    worst_prob = 0.0
    for batch, ref in zip(batches, references, strict=True):
        with torch.inference_mode():
            got = traced(*batch.args())
        shape = tuple(batch.input_ids.shape)
        if got.shape != ref.shape or got.dtype != torch.float32:
            raise ExportError(
                f"batch {shape}: trace gave {tuple(got.shape)} {got.dtype}, expected {tuple(ref.shape)} float32"
            )
        if not bool(torch.isfinite(got).all()):
            raise ExportError(f"batch {shape}: the trace produced non-finite logits")
        logit_diff = float((got - ref).abs().max())
        worst_logit = max(worst_logit, logit_diff)
        if dtype == "fp32":
            if logit_diff > FP32_MAX_ABS_LOGIT_DIFF:
                raise ExportError(
                    f"batch {shape}: max |logit difference| {logit_diff:.3g} > {FP32_MAX_ABS_LOGIT_DIFF:g}"
                )
            continue
        ref_p, got_p = _probabilities(ref, problem_type), _probabilities(got, problem_type)
        prob_diff = float((got_p - ref_p).abs().max())
        worst_prob = max(worst_prob, prob_diff)
        if prob_diff > LOW_PRECISION_MAX_PROB_DIFF:
            raise ExportError(
                f"batch {shape}: {dtype} probabilities differ from fp32 by {prob_diff:.3g} "
                f"> {LOW_PRECISION_MAX_PROB_DIFF:g}"
            )
        # A label flip counts unless fp32 itself has a near-tie (its top two
        # probabilities closer than the tolerance): then either label is right.
        top2 = ref_p.topk(min(2, ref_p.shape[-1]), dim=-1).values
        margin = top2[:, 0] - top2[:, -1] if top2.shape[-1] > 1 else torch.ones_like(top2[:, 0])
        flipped = (got_p.argmax(-1) != ref_p.argmax(-1)) & (margin > LOW_PRECISION_MAX_PROB_DIFF)
        if bool(flipped.any()):
            raise ExportError(
                f"batch {shape}: {dtype} changes the predicted label of row(s) {flipped.nonzero().flatten().tolist()}"
            )
    if dtype == "fp32":
        return f"max |logit diff| {worst_logit:.3g}"
    return f"max |prob diff| {worst_prob:.3g}, max |logit diff| {worst_logit:.3g}"


def _probabilities(logits: torch.Tensor, problem_type: str) -> torch.Tensor:
    import torch

    if uses_sigmoid(problem_type, logits.shape[-1]):
        return torch.sigmoid(logits)
    return torch.softmax(logits, dim=-1)


def _transformers_version() -> str:
    import transformers

    return str(transformers.__version__)


def save_checked(
    traced: torch.jit.ScriptModule, path: Path, ckpt: Checkpoint, device: torch.device
) -> torch.jit.ScriptModule:
    """Write the trace to `path`, then check that the file loads and gives what the verified trace gives.

    Returns the module loaded back from `path` (on `device`).
    """
    import torch

    with _quiet_torchscript():
        torch.jit.save(traced, str(path))
    load: Callable[..., Any] = torch.jit.load  # untyped in torch's stubs
    with _quiet_torchscript():
        loaded = load(str(path), map_location=device)
    batch = _parity_batches(ckpt, device)[-1]  # the pairs, for a model that takes segment ids
    with torch.inference_mode():
        diff = float((loaded(*batch.args()) - traced(*batch.args())).abs().max())
    if diff > SAVED_MAX_ABS_DIFF:
        raise ExportError(f"{path} does not reproduce the verified trace (max |diff| {diff:.3g})")
    assert isinstance(loaded, torch.jit.ScriptModule)
    return loaded


def expected_logits(
    module: torch.jit.ScriptModule, ckpt: Checkpoint, device: torch.device, texts: Sequence[str] = EXPECTATION_TEXTS
) -> list[list[float]]:
    """`module`'s float32 logits for each of `texts`, one batch of one each.

    Tokenized by the exported tokenizer.json (truncated to max_length, no
    padding), with token_type_ids for a model that takes them: what the
    front-end sends Triton for a lone text.
    """
    import torch
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(ckpt.tokenizer_json)
    tokenizer.enable_truncation(max_length=ckpt.max_length)
    tokenizer.no_padding()
    segments = TOKEN_TYPE_IDS in ckpt.inputs

    def tensor(values: list[int]) -> torch.Tensor:
        return torch.tensor([values], dtype=torch.int64, device=device)

    rows = []
    for text in texts:
        enc = tokenizer.encode(text)
        batch = _Batch(tensor(enc.ids), tensor(enc.attention_mask), tensor(enc.type_ids) if segments else None)
        with torch.inference_mode():
            logits = module(*batch.args())
        rows.append([float(x) for x in logits.float().cpu()[0].tolist()])
    return rows
