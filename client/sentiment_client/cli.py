"""Command-line client for the sentiment service: classify, tokenize, info, health."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Sequence

from .client import SentimentClient
from .errors import SentimentError
from .options import ClientOptions
from .types import ClassifyResult, ModelInfo, TokenizedText

DEMO_NOTE = "note: demo model with random weights; labels are meaningless"
TEXT_WIDTH = 40


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sentiment-client", description=__doc__)
    parser.add_argument("--target", help="host:port (env SENTIMENT_TARGET, default 127.0.0.1:50051)")
    parser.add_argument("--timeout", type=float, help="seconds per call (env SENTIMENT_TIMEOUT)")
    parser.add_argument("--api-key", help="sent as x-api-key (env SENTIMENT_API_KEY)")
    parser.add_argument("--tls", action="store_true", default=None, help="use TLS (env SENTIMENT_CLIENT_TLS)")
    parser.add_argument("--ca-cert", help="CA bundle, PEM (env SENTIMENT_CLIENT_TLS_CA)")
    parser.add_argument("--cert", help="client certificate for mTLS (env SENTIMENT_CLIENT_TLS_CERT)")
    parser.add_argument("--key", help="client key for mTLS (env SENTIMENT_CLIENT_TLS_KEY)")
    commands = parser.add_subparsers(dest="command", required=True)

    classify = commands.add_parser("classify", help="classify texts ('-' reads stdin)")
    classify.add_argument("texts", nargs="+", metavar="TEXT")
    classify.add_argument("--json", action="store_true", help="print JSON")
    classify.add_argument("--top-k", type=int, default=0, help="labels per text (0: all)")
    classify.add_argument("--logits", action="store_true", help="also return raw logits")
    classify.add_argument("--max-length", type=int, default=0, help="max tokens (0: model's)")

    tokenize = commands.add_parser("tokenize", help="tokenize texts ('-' reads stdin)")
    tokenize.add_argument("texts", nargs="+", metavar="TEXT")
    tokenize.add_argument("--json", action="store_true", help="print JSON")
    tokenize.add_argument("--pad", action="store_true", help="pad to the longest text")

    info = commands.add_parser("info", help="describe the served model")
    info.add_argument("--json", action="store_true", help="print JSON")

    health = commands.add_parser("health", help="exit 0 if SERVING, else 1")
    health.add_argument("--service", default="", help="service name ('' = whole server)")
    return parser


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


def _print_classify(texts: list[str], result: ClassifyResult, logits: bool) -> None:
    rows = [["TEXT", "LABEL", "SCORE"] + (["LOGITS"] if logits else [])]
    for text, c in zip(texts, result.results, strict=True):
        row = [_short(text), c.label, f"{c.score:.4f}"]
        if logits:
            row.append(" ".join(f"{x:.4f}" for x in c.logits))
        rows.append(row)
    _print_table(rows)


def _print_tokens(results: list[TokenizedText], pad: bool) -> None:
    for i, t in enumerate(results):
        print(f"[{i}] {len(t.tokens)} tokens" + (" (truncated)" if t.truncated else ""))
        print("  tokens:         " + " ".join(t.tokens))
        print("  input_ids:      " + " ".join(map(str, t.input_ids)))
        if pad:
            print("  attention_mask: " + " ".join(map(str, t.attention_mask)))


def _print_info(info: ModelInfo) -> None:
    for key, value in dataclasses.asdict(info).items():
        shown = ", ".join(value) if isinstance(value, (list, tuple)) else value
        print(f"{key}: {shown}")
    if info.demo:
        print(DEMO_NOTE)


def _is_demo(client: SentimentClient) -> bool:
    try:
        return client.model_info().demo
    except SentimentError:
        return False  # the note is best-effort


def _run(client: SentimentClient, args: argparse.Namespace) -> int:
    if args.command == "classify":
        texts = _read_texts(args.texts)
        result = client.classify(texts, top_k=args.top_k, return_logits=args.logits, max_length=args.max_length)
        if args.json:
            _print_json(dataclasses.asdict(result))
        else:
            _print_classify(texts, result, args.logits)
            if _is_demo(client):
                print(DEMO_NOTE)
    elif args.command == "tokenize":
        results = client.tokenize(_read_texts(args.texts), pad=args.pad)
        if args.json:
            _print_json([dataclasses.asdict(t) for t in results])
        else:
            _print_tokens(results, args.pad)
    elif args.command == "info":
        info = client.model_info()
        if args.json:
            _print_json(dataclasses.asdict(info))
        else:
            _print_info(info)
    elif args.command == "health":
        status = client.health(args.service)
        print(status)
        return 0 if status == "SERVING" else 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        options = _options(args)
    except ValueError as e:
        parser.error(str(e))
    try:
        with SentimentClient(options=options) as client:
            return _run(client, args)
    except SentimentError as e:
        print(f"error: {e.code.name}: {e.message}", file=sys.stderr)
        return 2
    except OSError as e:  # unreadable certificate files
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
