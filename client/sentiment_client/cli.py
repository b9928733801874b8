"""Command-line client for the sentiment service: classify, tokenize, info, models, health."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence

from .client import SentimentClient, Truncation
from .errors import SentimentError
from .options import ClientOptions
from .types import ClassifyResult, ModelInfo, ModelList, TokenizedText

DEMO_NOTE = "note: demo model with random weights; labels are meaningless"
TEXT_WIDTH = 40


class _IntermixedParser(argparse.ArgumentParser):
    """A command whose TEXTs and options interleave, as `TEXT --pair P TEXT --pair P` needs."""

    _inner = False  # parse_known_intermixed_args calls parse_known_args itself (Python 3.11)

    def parse_known_args(  # type: ignore[override]
        self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        if self._inner:
            return super().parse_known_args(args, namespace)
        self._inner = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._inner = False


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sentiment-client", description=__doc__)
    parser.add_argument("--target", help="host:port (env SENTIMENT_TARGET, default 127.0.0.1:50051)")
    parser.add_argument("--timeout", type=float, help="seconds per call (env SENTIMENT_TIMEOUT)")
    parser.add_argument("--api-key", help="sent as x-api-key (env SENTIMENT_API_KEY)")
    parser.add_argument("--tls", action="store_true", default=None, help="use TLS (env SENTIMENT_CLIENT_TLS)")
    parser.add_argument("--ca-cert", help="CA bundle, PEM (env SENTIMENT_CLIENT_TLS_CA)")
    parser.add_argument("--cert", help="client certificate for mTLS (env SENTIMENT_CLIENT_TLS_CERT)")
    parser.add_argument("--key", help="client key for mTLS (env SENTIMENT_CLIENT_TLS_KEY)")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_IntermixedParser)

    classify = commands.add_parser("classify", help="classify texts or text pairs ('-' reads stdin)")
    _add_input_args(classify)
    classify.add_argument("--top-k", type=int, default=0, help="labels per text (0: all)")
    classify.add_argument("--logits", action="store_true", help="also return raw logits")
    classify.add_argument(
        "--aggregation",
        choices=("mean", "mean_logits", "max"),
        help="how windows combine (with --window; server default: mean)",
    )
    classify.add_argument("--return-windows", action="store_true", help="also print each window (with --window)")

    tokenize = commands.add_parser("tokenize", help="tokenize texts or text pairs ('-' reads stdin)")
    _add_input_args(tokenize)
    tokenize.add_argument("--pad", action="store_true", help="pad to the longest text")

    info = commands.add_parser("info", help="describe a served model (the default one unless --model)")
    info.add_argument("--json", action="store_true", help="print JSON")
    _add_model_arg(info)

    models = commands.add_parser("models", help="list the served models (* marks the default one)")
    models.add_argument("--json", action="store_true", help="print JSON")

    health = commands.add_parser("health", help="exit 0 if SERVING, else 1")
    health.add_argument("--service", default="", help="service name ('' = whole server)")
    return parser


def _non_negative(value: str) -> int:
    number = int(value)
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {number}")
    return number


def _add_model_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", default="", metavar="NAME", help="the model to use (see `models`; default: the server's default)"
    )


def _add_input_args(parser: argparse.ArgumentParser) -> None:
    """Texts, pairs, truncation and the model: what classify and tokenize share."""
    parser.add_argument("texts", nargs="+", metavar="TEXT")
    parser.add_argument("--json", action="store_true", help="print JSON")
    _add_model_arg(parser)
    parser.add_argument(
        "--pair",
        action="append",
        metavar="TEXT",
        help="second text of a pair: once per TEXT, in order (pairs, e.g. NLI or cross-encoders)",
    )
    parser.add_argument("--max-length", type=_non_negative, default=0, help="max tokens (0: model's)")
    parser.add_argument(
        "--window", action="store_true", help="long texts as overlapping windows of --max-length tokens, not cut"
    )
    parser.add_argument(
        "--stride",
        type=_non_negative,
        metavar="N",
        help="tokens shared by consecutive windows (with --window; default: a quarter of a window)",
    )


def _check_window_args(args: argparse.Namespace) -> None:
    """Window options without --window, or windows for pairs (the contract refuses them), are usage errors."""
    window_only = {
        "--stride": args.stride is not None,
        "--aggregation": getattr(args, "aggregation", None) is not None,
        "--return-windows": getattr(args, "return_windows", False),
    }
    if not args.window:
        given = [flag for flag, present in window_only.items() if present]
        if given:
            raise ValueError(f"{', '.join(given)} need --window")
    elif args.pair is not None:
        raise ValueError("--window is for single texts, not --pair")


def _pairs(texts: list[str], seconds: list[str] | None) -> list[tuple[str, str]] | None:
    """The `--pair` values matched to the texts in order; None without `--pair`."""
    if seconds is None:
        return None
    if len(seconds) != len(texts):
        raise ValueError(f"--pair given {len(seconds)} times for {len(texts)} texts: give one per TEXT")
    return list(zip(texts, seconds, strict=True))


def _options(args: argparse.Namespace) -> ClientOptions:
    """Flags override the environment defaults that `ClientOptions()` reads."""
    base = ClientOptions()
    overrides = {
        "target": args.target,
        "timeout_s": args.timeout,
        "api_key": args.api_key,
        "tls": args.tls,
        "ca_cert": args.ca_cert,
        "client_cert": args.cert,
        "client_key": args.key,
    }
    return dataclasses.replace(base, **{k: v for k, v in overrides.items() if v is not None})


def _read_texts(texts: Sequence[str]) -> list[str]:
    """Expand each `-` into the non-empty lines of stdin."""
    out: list[str] = []
    for text in texts:
        if text == "-":
            out.extend(line for line in sys.stdin.read().splitlines() if line.strip())
        else:
            out.append(text)
    return out


def _print_json(value: object) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= TEXT_WIDTH else text[: TEXT_WIDTH - 3] + "..."


def _print_table(rows: list[list[str]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


def _print_classify(
    texts: list[str], pairs: list[tuple[str, str]] | None, result: ClassifyResult, args: argparse.Namespace
) -> None:
    """One row per text; with --window its number of windows, with --return-windows a row per window below."""
    rows = [["TEXT", *(["PAIR"] if pairs else []), "LABEL", "SCORE"]]
    rows[0] += (["WINDOWS"] if args.window else []) + (["LOGITS"] if args.logits else [])
    for i, (text, c) in enumerate(zip(texts, result.results, strict=True)):
        row = [_short(text), *([_short(pairs[i][1])] if pairs else []), c.label, f"{c.score:.4f}"]
        row += ([str(c.num_windows)] if args.window else []) + ([_floats(c.logits)] if args.logits else [])
        rows.append(row)
        # Windows need --window, which pairs refuse: TEXT, LABEL, SCORE, WINDOWS line up.
        for w in c.windows:
            window_row = [f"  tokens {w.start_token}-{w.end_token}", w.label, f"{w.score:.4f}", ""]
            rows.append(window_row + ([""] if args.logits else []))
    _print_table(rows)


def _floats(values: tuple[float, ...]) -> str:
    return " ".join(f"{x:.4f}" for x in values)


def _print_tokens(results: list[TokenizedText], pad: bool) -> None:
    for i, text in enumerate(results):
        windows = (text, *text.overflowing)
        for w, t in enumerate(windows):
            name = f"[{i}]" if len(windows) == 1 else f"[{i}] window {w + 1}/{len(windows)}:"
            print(f"{name} {len(t.tokens)} tokens" + (" (truncated)" if t.truncated else ""))
            print("  tokens:         " + " ".join(t.tokens))
            print("  input_ids:      " + " ".join(map(str, t.input_ids)))
            if t.token_type_ids:
                print("  token_type_ids: " + " ".join(map(str, t.token_type_ids)))
            if pad:
                print("  attention_mask: " + " ".join(map(str, t.attention_mask)))


def _print_info(info: ModelInfo) -> None:
    for key, value in dataclasses.asdict(info).items():
        shown = ", ".join(value) if isinstance(value, (list, tuple)) else value
        print(f"{key}: {shown}")
    if info.demo:
        print(DEMO_NOTE)


def _print_models(models: ModelList) -> None:
    """One row per model, the default one marked with `*`."""
    rows = [["", "NAME", "VERSION", "READY", "LABELS", "SOURCE"]]
    for m in models.models:
        default = "*" if m.name == models.default_model else ""
        ready = "yes" if m.ready else "no"
        rows.append([default, m.name, m.model_version, ready, ",".join(m.labels), m.source_checkpoint])
    _print_table(rows)


def _is_demo(client: SentimentClient, model: str) -> bool:
    try:
        return client.model_info(model=model).demo
    except SentimentError:
        return False  # the note is best-effort


def _classify(client: SentimentClient, args: argparse.Namespace, pairs: list[tuple[str, str]] | None) -> ClassifyResult:
    if pairs is not None:
        return client.classify_pairs(
            pairs, top_k=args.top_k, return_logits=args.logits, max_length=args.max_length, model=args.model
        )
    truncation: Truncation = "window" if args.window else "truncate"
    return client.classify(
        args.texts,
        top_k=args.top_k,
        return_logits=args.logits,
        max_length=args.max_length,
        truncation=truncation,
        stride=args.stride,
        aggregation=args.aggregation,
        return_windows=args.return_windows,
        model=args.model,
    )


def _tokenize(
    client: SentimentClient, args: argparse.Namespace, pairs: list[tuple[str, str]] | None
) -> list[TokenizedText]:
    if pairs is not None:
        return client.tokenize_pairs(pairs, pad=args.pad, max_length=args.max_length, model=args.model)
    truncation: Truncation = "window" if args.window else "truncate"
    return client.tokenize(
        args.texts,
        pad=args.pad,
        max_length=args.max_length,
        truncation=truncation,
        stride=args.stride,
        model=args.model,
    )


def _run(client: SentimentClient, args: argparse.Namespace, pairs: list[tuple[str, str]] | None = None) -> int:
    if args.command == "classify":
        result = _classify(client, args, pairs)
        if args.json:
            _print_json(dataclasses.asdict(result))
        else:
            _print_classify(args.texts, pairs, result, args)
            if _is_demo(client, args.model):
                print(DEMO_NOTE)
    elif args.command == "tokenize":
        results = _tokenize(client, args, pairs)
        if args.json:
            _print_json([dataclasses.asdict(t) for t in results])
        else:
            _print_tokens(results, args.pad)
    elif args.command == "info":
        info = client.model_info(model=args.model)
        if args.json:
            _print_json(dataclasses.asdict(info))
        else:
            _print_info(info)
    elif args.command == "models":
        models = client.list_models()
        if args.json:
            _print_json(dataclasses.asdict(models))
        else:
            _print_models(models)
    elif args.command == "health":
        status = client.health(args.service)
        print(status)
        return 0 if status == "SERVING" else 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    pairs = None
    try:
        options = _options(args)
        if args.command in ("classify", "tokenize"):
            _check_window_args(args)
            args.texts = _read_texts(args.texts)
            pairs = _pairs(args.texts, args.pair)
    except ValueError as e:
        parser.error(str(e))
    try:
        with SentimentClient(options=options) as client:
            return _run(client, args, pairs)
    except SentimentError as e:
        print(f"error: {e.code.name}: {e.message}", file=sys.stderr)
        return 2
    except OSError as e:  # unreadable certificate files
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
