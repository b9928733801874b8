"""The Node.js client (client/node) against an in-process front-end, checked against the Python client."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from fake_backend import FakeBackend, InProcessServer, fake_model
from google.protobuf.message import Message
from sentiment.v1 import sentiment_pb2 as pb
from sentiment.v1 import sentiment_pb2_grpc as pb_grpc
from sentiment_client import SentimentClient, SentimentError
from sentiment_server.model_artifact import MULTI_LABEL

ROOT = Path(__file__).resolve().parents[2]
SEED = json.loads((ROOT / "tests" / "data" / "seed_pipeline.json").read_text())
CLI = ROOT / "client" / "node" / "cli.js"
TEXTS = [
    *SEED["texts"],
    "ok",
    "Crème brûlée à Paris, 東京 and naïve café-goers; $12.50 per slice?!",
    "The plot was predictable, the acting wooden, and yet I could not stop watching. " * 60,
]

TOPICS = ("sports", "politics", "tech", "music")
_M = TypeVar("_M", bound=Message)


@pytest.fixture(scope="module")
def services() -> Iterator[dict[str, InProcessServer]]:
    """The binary sentiment model and a multi-label one, each behind its own front-end."""
    with (
        InProcessServer() as sentiment,
        InProcessServer(FakeBackend(len(TOPICS)), fake_model(TOPICS, MULTI_LABEL)) as topics4,
    ):
        yield {"sentiment": sentiment, "topics4": topics4}


@pytest.fixture(scope="module")
def service(services: dict[str, InProcessServer]) -> InProcessServer:
    return services["sentiment"]


@pytest.fixture(scope="module")
def node() -> str:
    executable = shutil.which("node")
    if executable is None:
        pytest.skip("Node.js is not installed")
    if not (ROOT / "node_modules" / "@grpc" / "grpc-js").is_dir():
        pytest.fail("node_modules is missing @grpc/grpc-js: run `npm install` (scripts/bootstrap.sh does)")
    return executable


def run_cli(node: str, target: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [node, str(CLI), "--target", target, *args], capture_output=True, text=True, timeout=60, cwd=ROOT
    )


def classify_json(node: str, target: str, *args: str) -> dict[str, Any]:
    result = run_cli(node, target, "classify", "--json", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)  # type: ignore[no-any-return]


@pytest.mark.parametrize("model", ["sentiment", "topics4"])
def test_classify_matches_the_python_client(node: str, services: dict[str, InProcessServer], model: str) -> None:
    target = services[model].target
    got = classify_json(node, target, "--logits", "--", *TEXTS)
    with SentimentClient(target) as client:
        want = client.classify(TEXTS, return_logits=True)
    assert (got["model_name"], got["model_version"]) == (want.model_name, want.model_version)
    assert len(got["results"]) == len(want.results) == len(TEXTS)
    for mine, theirs in zip(got["results"], want.results, strict=True):
        assert mine["label"] == theirs.label
        assert mine["score"] == pytest.approx(theirs.score, abs=1e-6)
        assert [(s["label"], s["label_id"]) for s in mine["scores"]] == [(s.label, s.label_id) for s in theirs.scores]
        assert [s["score"] for s in mine["scores"]] == pytest.approx([s.score for s in theirs.scores], abs=1e-6)
        assert mine["logits"] == pytest.approx(list(theirs.logits), abs=1e-6)
        assert (mine["num_tokens"], mine["truncated"]) == (theirs.num_tokens, theirs.truncated)
    assert got["results"][-1]["truncated"] is True
    assert set(got["timings"]) == {"tokenize_us", "queue_us", "inference_us", "total_us"}


def test_top_k_and_table_output(node: str, service: InProcessServer) -> None:
    got = classify_json(node, service.target, "--top-k", "1", "I love it")
    assert len(got["results"][0]["scores"]) == 1
    assert got["results"][0]["logits"] == []
    table = run_cli(node, service.target, "classify", "I love it", "I hate it")
    assert table.returncode == 0, table.stderr
    header, *rows = table.stdout.splitlines()
    assert header.split() == ["TEXT", "LABEL", "SCORE"] and len(rows) == 2


def test_health_and_model_info(node: str, service: InProcessServer) -> None:
    health = run_cli(node, service.target, "health")
    assert (health.returncode, health.stdout.strip()) == (0, "SERVING")
    unknown = run_cli(node, service.target, "health", "--service", "no.such.Service")
    with SentimentClient(service.target) as client:
        with pytest.raises(SentimentError) as python_error:
            client.health("no.such.Service")
        info = client.model_info()
    assert unknown.returncode == 2 and f"error: {python_error.value.code.name}:" in unknown.stderr
    mine = json.loads(run_cli(node, service.target, "info").stdout)
    assert mine["labels"] == list(info.labels)
    assert (mine["model_name"], mine["max_sequence_length"]) == (info.model_name, info.max_sequence_length)


def test_errors_carry_the_status_code(node: str, service: InProcessServer) -> None:
    with SentimentClient(service.target) as client, pytest.raises(SentimentError) as python_error:
        client.classify(["fine"], max_length=100_000)
    result = run_cli(node, service.target, "classify", "--max-length", "100000", "fine")
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {python_error.value.code.name}:")
    usage = run_cli(node, service.target, "classify")
    assert usage.returncode == 2 and "usage:" in usage.stderr


# --- windows and pairs: the Node client's requests, decoded by the Python stubs ----------

# Builds requests with the Node client (its builders, or its CLI with `_unary` replaced by a
# recorder) and prints them as protobuf bytes: the exact encoding grpc-js would send.
HARNESS = r"""
const sentiment = require('./client/node/sentiment');
const { main } = require('./client/node/cli');
const service = sentiment.loadServices().SentimentService.service;
const METHODS = { classifyRequest: 'Classify', classifyPairsRequest: 'Classify', tokenizeRequest: 'Tokenize',
                  tokenizePairsRequest: 'Tokenize', modelInfoRequest: 'GetModelInfo' };
const encode = (method, request) => service[method].requestSerialize(request).toString('base64');
const scores = [{ label: 'POSITIVE', score: 0.75, label_id: 1 }, { label: 'NEGATIVE', score: 0.25, label_id: 0 }];

function answer(method, request) {
  if (method === 'ListModels') return { models: [{ name: 'fake', ready: true }], default_model: 'fake' };
  if (method === 'GetModelInfo') return { model_name: request.model || 'fake' };
  const window = request.truncation.strategy === 'TRUNCATION_STRATEGY_WINDOW';
  const windows = request.return_windows ? [[0, 6], [4, 10]].map(([s, e]) =>
    ({ scores, start_token: s, end_token: e, num_tokens: e - s + 2 })) : [];
  const n = (request.texts || []).length + (request.pairs || []).length;
  const results = Array.from({ length: n }, () =>
    ({ label: 'POSITIVE', score: 0.75, scores, num_windows: window ? 2 : 1, windows }));
  return { results };
}

async function cli(argv) {
  const run = { requests: [], methods: [], out: [], err: [] };
  sentiment.SentimentClient.prototype._unary = async (stub, method, request) => {
    run.requests.push(encode(method, request));
    run.methods.push(method);
    return answer(method, request);
  };
  const [log, error] = [console.log, console.error];
  console.log = (...args) => run.out.push(args.join(' '));
  console.error = (...args) => run.err.push(args.join(' '));
  try {
    run.code = await main(['--target', '127.0.0.1:1', ...argv]);
  } finally {
    [console.log, console.error] = [log, error];
  }
  return run;
}

(async () => {
  const input = JSON.parse(require('node:fs').readFileSync(0, 'utf8'));
  const build = (input.build || []).map(([name, first, options]) => {
    try {
      // A null first argument: a builder that takes only options (modelInfoRequest).
      return encode(METHODS[name], first === null ? sentiment[name](options) : sentiment[name](first, options));
    } catch (error) {
      return { error: error.message };
    }
  });
  const runs = [];
  for (const argv of input.cli || []) runs.push(await cli(argv));
  process.stdout.write(JSON.stringify({ build, cli: runs }));
})();
"""


def node_harness(node: str, build: list[list[Any]] | None = None, cli: list[list[str]] | None = None) -> Any:
    payload = json.dumps({"build": build or [], "cli": cli or []})
    result = subprocess.run([node, "-e", HARNESS], input=payload, capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def decode(message: type[_M], encoded: str) -> _M:
    return message.FromString(base64.b64decode(encoded))


def truncation_fields(options: pb.TruncationOptions) -> tuple[int, int, int | None, int]:
    """(strategy, max_length, stride or None when unset, aggregation)."""
    return (
        options.strategy,
        options.max_length,
        options.stride if options.HasField("stride") else None,
        options.aggregation,
    )


def test_node_builds_window_and_pair_requests(node: str) -> None:
    window = {"truncation": "window", "maxLength": 16}
    got = node_harness(
        node,
        build=[
            ["classifyRequest", ["a"], {}],
            ["classifyRequest", ["a"], {**window}],  # stride unset: not on the wire
            ["classifyRequest", ["a"], {**window, "stride": 0, "aggregation": "mean", "returnWindows": True}],
            ["classifyRequest", "a", {**window, "stride": 5, "aggregation": "mean_logits"}],
            ["classifyRequest", ["a"], {**window, "stride": None, "aggregation": "max"}],
            ["classifyPairsRequest", [["p", "h"], ["x", "y"]], {"topK": 1, "truncation": "reject", "maxLength": 9}],
            ["tokenizeRequest", ["a"], {"truncation": "window", "stride": 2, "pad": True}],
            ["tokenizePairsRequest", [["p", "h"]], {"maxLength": 7}],
            ["classifyPairsRequest", ["ab"], {}],
            ["classifyRequest", ["a"], {"aggregation": "median"}],
            ["classifyRequest", ["a"], {"truncation": "sliding"}],
        ],
    )["build"]
    plain, unset, zero, five, none, pairs, tokenize, tokenize_pairs, bad_pair, bad_aggregation, bad_truncation = got
    truncate, window_strategy = pb.TRUNCATION_STRATEGY_TRUNCATE, pb.TRUNCATION_STRATEGY_WINDOW

    request = decode(pb.ClassifyRequest, plain)
    assert truncation_fields(request.truncation) == (truncate, 0, None, pb.WINDOW_AGGREGATION_UNSPECIFIED)
    assert (list(request.texts), list(request.pairs), request.return_windows) == (["a"], [], False)
    assert truncation_fields(decode(pb.ClassifyRequest, unset).truncation) == (window_strategy, 16, None, 0)
    request = decode(pb.ClassifyRequest, zero)
    assert truncation_fields(request.truncation) == (window_strategy, 16, 0, pb.WINDOW_AGGREGATION_MEAN)
    assert request.return_windows is True
    request = decode(pb.ClassifyRequest, five)
    assert truncation_fields(request.truncation) == (window_strategy, 16, 5, pb.WINDOW_AGGREGATION_MEAN_LOGITS)
    assert list(request.texts) == ["a"]
    assert truncation_fields(decode(pb.ClassifyRequest, none).truncation) == (
        window_strategy,
        16,
        None,
        pb.WINDOW_AGGREGATION_MAX,
    )
    request = decode(pb.ClassifyRequest, pairs)
    assert [(p.text, p.text_pair) for p in request.pairs] == [("p", "h"), ("x", "y")] and list(request.texts) == []
    assert (request.top_k, request.return_windows) == (1, False)
    assert truncation_fields(request.truncation) == (pb.TRUNCATION_STRATEGY_REJECT, 9, None, 0)
    request_t = decode(pb.TokenizeRequest, tokenize)
    assert truncation_fields(request_t.truncation) == (window_strategy, 0, 2, 0) and request_t.pad
    request_t = decode(pb.TokenizeRequest, tokenize_pairs)
    assert [(p.text, p.text_pair) for p in request_t.pairs] == [("p", "h")]
    assert truncation_fields(request_t.truncation) == (truncate, 7, None, 0)
    assert "[text, textPair]" in bad_pair["error"]
    assert bad_aggregation == {"error": 'unknown aggregation "median"'}
    assert bad_truncation == {"error": 'unknown truncation "sliding"'}


def test_node_cli_window_and_pair_flags(node: str) -> None:
    runs = node_harness(
        node,
        cli=[
            [
                "classify",
                "--window",
                "--max-length",
                "16",
                "--stride",
                "0",
                "--aggregation",
                "max",
                "--return-windows",
                "I love it",
                "meh",
            ],
            ["classify", "--json", "--window", "x"],
            ["classify", "premise one", "--pair", "hypothesis one", "premise two", "--pair", "hypothesis two"],
            ["classify", "--stride", "4", "x"],
            ["classify", "--window", "x", "--pair", "y"],
            ["classify", "a", "b", "--pair", "y"],
            ["classify", "--window", "--stride=-1", "x"],
            ["classify", "--window", "--aggregation", "median", "x"],
        ],
    )["cli"]
    window, window_json, pairs, *refused = runs

    assert window["code"] == 0, window["err"]
    (request,) = (decode(pb.ClassifyRequest, r) for r in window["requests"])
    assert truncation_fields(request.truncation) == (
        pb.TRUNCATION_STRATEGY_WINDOW,
        16,
        0,
        pb.WINDOW_AGGREGATION_MAX,
    )
    assert request.return_windows and list(request.texts) == ["I love it", "meh"]
    header, first, *first_windows = window["out"][:4]
    assert header.split() == ["TEXT", "LABEL", "SCORE", "WINDOWS"]
    assert first.split() == ["I", "love", "it", "POSITIVE", "0.7500", "2"]
    assert [w.split() for w in first_windows] == [
        ["tokens", "0-6", "POSITIVE", "0.7500"],
        ["tokens", "4-10", "POSITIVE", "0.7500"],
    ]

    assert window_json["code"] == 0, window_json["err"]
    request = decode(pb.ClassifyRequest, window_json["requests"][0])
    assert truncation_fields(request.truncation) == (pb.TRUNCATION_STRATEGY_WINDOW, 0, None, 0)
    assert not request.return_windows
    assert json.loads(window_json["out"][0])["results"][0]["num_windows"] == 2

    assert pairs["code"] == 0, pairs["err"]
    request = decode(pb.ClassifyRequest, pairs["requests"][0])
    assert [(p.text, p.text_pair) for p in request.pairs] == [
        ("premise one", "hypothesis one"),
        ("premise two", "hypothesis two"),
    ]
    assert pairs["out"][0].split() == ["TEXT", "PAIR", "LABEL", "SCORE"]

    messages = [
        "--stride need --window",
        "--window is for single texts, not --pair",
        "--pair given 1 times for 2 texts",
        "--stride must be a number, 0 or more",
        "--aggregation must be mean, mean_logits or max",
    ]
    for run, message in zip(refused, messages, strict=True):
        assert (run["code"], run["requests"]) == (2, []), run
        assert message in run["err"][0] and "usage:" in run["err"][0]


def _same_classification(mine: dict[str, Any], theirs: Any) -> None:
    assert (mine["label"], mine["num_tokens"], mine["truncated"]) == (theirs.label, theirs.num_tokens, theirs.truncated)
    assert mine["score"] == pytest.approx(theirs.score, abs=1e-6)
    assert mine["logits"] == pytest.approx(list(theirs.logits), abs=1e-6)
    assert mine["num_windows"] == theirs.num_windows and len(mine["windows"]) == len(theirs.windows)
    for window, want in zip(mine["windows"], theirs.windows, strict=True):
        assert (window["start_token"], window["end_token"], window["num_tokens"]) == (
            want.start_token,
            want.end_token,
            want.num_tokens,
        )
        assert [s["score"] for s in window["scores"]] == pytest.approx([s.score for s in want.scores], abs=1e-6)


def test_windows_and_pairs_match_the_python_client(node: str, service: InProcessServer) -> None:
    long = "The plot was predictable, the acting wooden, and yet I could not stop watching. " * 3
    flags = ["--window", "--max-length", "16", "--stride", "3", "--aggregation", "mean_logits", "--return-windows"]
    got = classify_json(node, service.target, "--logits", *flags, "--", long, "ok")
    pairs = [("A man is playing a guitar.", "Someone plays an instrument."), ("ok", long)]
    interleaved = [arg for text, text_pair in pairs for arg in (text, "--pair", text_pair)]
    got_pairs = classify_json(node, service.target, "--logits", *interleaved)
    with SentimentClient(service.target) as client:
        want = client.classify(
            [long, "ok"],
            return_logits=True,
            truncation="window",
            max_length=16,
            stride=3,
            aggregation="mean_logits",
            return_windows=True,
        )
        want_pairs = client.classify_pairs(pairs, return_logits=True)
    assert want.results[0].num_windows > 1
    for mine, theirs in zip(got["results"], want.results, strict=True):
        _same_classification(mine, theirs)
    for mine, theirs in zip(got_pairs["results"], want_pairs.results, strict=True):
        _same_classification(mine, theirs)


# --- models: the `model` option, listModels ----------------------------------------------


def test_node_sends_the_model_in_every_request(node: str) -> None:
    named = {"model": "topics"}
    got = node_harness(
        node,
        build=[
            ["classifyRequest", ["a"], {}],
            ["classifyRequest", ["a"], {**named, "truncation": "window", "stride": 2}],
            ["classifyPairsRequest", [["p", "h"]], named],
            ["tokenizeRequest", "a", named],
            ["tokenizePairsRequest", [["p", "h"]], named],
            ["modelInfoRequest", None, named],
            ["modelInfoRequest", None, {}],
        ],
    )["build"]
    plain, window, pairs, tokenize, tokenize_pairs, info, default_info = got
    assert decode(pb.ClassifyRequest, plain).model == ""
    request = decode(pb.ClassifyRequest, window)
    assert request.model == "topics"
    assert truncation_fields(request.truncation) == (pb.TRUNCATION_STRATEGY_WINDOW, 0, 2, 0)
    assert decode(pb.ClassifyRequest, pairs).model == "topics"
    assert decode(pb.TokenizeRequest, tokenize).model == "topics"
    assert decode(pb.TokenizeRequest, tokenize_pairs).model == "topics"
    assert decode(pb.GetModelInfoRequest, info).model == "topics"
    assert decode(pb.GetModelInfoRequest, default_info).model == ""


def test_node_cli_model_flag_and_models_command(node: str) -> None:
    runs = node_harness(
        node,
        cli=[
            ["classify", "--model", "topics", "--json", "x"],
            ["classify", "a", "--pair", "b", "--model", "topics"],
            ["classify", "x"],
            ["info", "--model", "topics"],
            ["info"],
            ["models"],
        ],
    )["cli"]
    for run in runs:
        assert run["code"] == 0, run["err"]
    classify, pairs, plain, info, default_info, models = runs
    assert [decode(pb.ClassifyRequest, r["requests"][0]).model for r in (classify, pairs, plain)] == [
        "topics",
        "topics",
        "",
    ]
    assert info["methods"] == ["GetModelInfo"]
    assert decode(pb.GetModelInfoRequest, info["requests"][0]).model == "topics"
    assert json.loads(info["out"][0])["model_name"] == "topics"
    assert decode(pb.GetModelInfoRequest, default_info["requests"][0]).model == ""
    assert models["methods"] == ["ListModels"]
    assert json.loads(models["out"][0]) == {"models": [{"name": "fake", "ready": True}], "default_model": "fake"}


class ModelsServicer(pb_grpc.SentimentServiceServicer):
    """Just GetModelInfo and ListModels, two models: what the Node client's wire calls need."""

    MODELS = pb.ListModelsResponse(
        models=[
            pb.ModelSummary(name="sentiment", model_version="2", labels=["NEGATIVE", "POSITIVE"], ready=True),
            pb.ModelSummary(name="topics", model_version="1", labels=list(TOPICS), source_checkpoint="/ckpt/t"),
        ],
        default_model="sentiment",
    )

    def GetModelInfo(self, request: pb.GetModelInfoRequest, context: grpc.ServicerContext) -> pb.GetModelInfoResponse:
        name = request.model or self.MODELS.default_model
        for summary in self.MODELS.models:
            if summary.name == name:
                return pb.GetModelInfoResponse(model_name=name, model_version=summary.model_version)
        context.abort(grpc.StatusCode.NOT_FOUND, f"no model named {name!r}")

    def ListModels(self, request: pb.ListModelsRequest, context: grpc.ServicerContext) -> pb.ListModelsResponse:
        return self.MODELS


@pytest.fixture(scope="module")
def models_target() -> Iterator[str]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    pb_grpc.add_SentimentServiceServicer_to_server(ModelsServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop(grace=None).wait()


def test_node_list_models_and_unknown_model_over_grpc(node: str, models_target: str) -> None:
    models = run_cli(node, models_target, "models")
    assert models.returncode == 0, models.stderr
    with SentimentClient(models_target) as client:
        want = client.list_models()
    got = json.loads(models.stdout)
    assert got["default_model"] == want.default_model == "sentiment"
    assert [
        (m["name"], m["model_version"], tuple(m["labels"]), m["source_checkpoint"], m["ready"]) for m in got["models"]
    ] == [(m.name, m.model_version, m.labels, m.source_checkpoint, m.ready) for m in want.models]
    info = run_cli(node, models_target, "info", "--model", "topics")
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["model_name"] == "topics"
    unknown = run_cli(node, models_target, "info", "--model", "nope")
    assert unknown.returncode == 2 and unknown.stderr.startswith("error: NOT_FOUND:"), unknown.stderr
