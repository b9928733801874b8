"""`sentiment-server`: export | triton | serve | up | rollout | rollback | versions."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import tempfile
from collections.abc import Coroutine, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .logging_setup import configure_logging
from .settings import (
    DEFAULT_CHECKPOINT,
    AdminSettings,
    ExportSettings,
    ModelSettings,
    ServeSettings,
    TritonSettings,
    UpSettings,
    VersionsSettings,
    add_arguments,
    pick,
    settings_from,
)

if TYPE_CHECKING:
    from .backend.triton_process import EmbeddedTriton
    from .backend.triton_supervisor import TritonSupervisor

log = logging.getLogger("sentiment_server")


async def _wait_for_signal(watch: Coroutine[Any, Any, None] | None = None) -> None:
    """Until SIGINT or SIGTERM. `watch` (a supervisor) runs meanwhile; its exception ends the wait and is raised."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    waiters: set[asyncio.Future[Any]] = {asyncio.ensure_future(stop.wait())}
    if watch is not None:
        waiters.add(asyncio.ensure_future(watch))
    done, pending = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
    await asyncio.gather(*pending, return_exceptions=True)
    for task in done:
        task.result()


def _worker_count(settings: ServeSettings) -> int:
    from .core_budget import default_workers, resolve_count
    from .service import served_model_names
    from .workers import models_on_gpu

    on_gpu = models_on_gpu(settings.model_repository, served_model_names(settings))
    return resolve_count(settings.workers, default_workers(on_gpu), "--workers")


async def _serve(settings: ServeSettings, supervisor: TritonSupervisor | None = None) -> None:
    """The front-end until a signal; `supervisor` (from `up`) watches the embedded Triton meanwhile."""
    from . import tracing
    from .service import start_front_end

    workers = _worker_count(settings)
    if workers > 1:
        await _serve_workers(settings, workers, supervisor)
        return
    tracing.configure(settings.otel)
    if supervisor is None:
        front = await start_front_end(settings)
        supervise = None
    else:
        front = await start_front_end(settings, supervisor.expecting_stub_exits)
        supervise = supervisor.run(on_restart=front.metrics.triton_restarts.inc)
    print(f"sentiment-server: serving on {settings.host}:{front.port}", flush=True)
    if front.admin is not None:
        print(f"sentiment-server: admin (rollout, rollback) on 127.0.0.1:{front.admin_port}", flush=True)
    if front.metrics_http is not None:
        print(f"sentiment-server: metrics on {settings.host}:{front.metrics_http.server_port}", flush=True)
    try:
        await _wait_for_signal(supervise)
    finally:
        log.info("draining for up to %.1fs", settings.grace_s)
        await front.stop(settings.grace_s)


async def _serve_workers(settings: ServeSettings, count: int, supervisor: TritonSupervisor | None) -> None:
    """`count` front-end processes on one port until a signal; this process supervises them (and Triton)."""
    from prometheus_client import CollectorRegistry, start_http_server

    from .service import TritonVersions, default_model, served_model_names
    from .transport.admin import admin_server
    from .transport.merged_metrics import MergedMetrics, SupervisorMetrics
    from .worker_rollouts import WorkerRollouts
    from .workers import WorkerPool, first_failure

    pool = WorkerPool(settings, count)
    await pool.start()
    counters = SupervisorMetrics()
    http_server = admin = versions = None
    try:
        if settings.metrics_port >= 0:
            registry = CollectorRegistry()
            registry.register(
                MergedMetrics(
                    counters.registry,
                    lambda: [f"http://{settings.host}:{w.metrics_port}/metrics" for w in pool.workers],
                )
            )
            http_server, _ = start_http_server(settings.metrics_port, addr=settings.host, registry=registry)
        if settings.admin_port >= 0:
            names = served_model_names(settings)
            if settings.triton_model_control:
                versions = TritonVersions(settings, supervisor.expecting_stub_exits if supervisor else nullcontext)
            switch = WorkerRollouts(
                lambda: [w.admin_port for w in pool.workers],
                names,
                default_model(settings, names),
                versions,
                settings.api_key,
            )
            admin, admin_port = admin_server(switch, settings.admin_port, settings.api_key)
            await admin.start()
        print(f"sentiment-server: serving on {settings.host}:{pool.port} ({count} workers)", flush=True)
        if admin is not None:
            print(f"sentiment-server: admin (rollout, rollback) on 127.0.0.1:{admin_port}", flush=True)
        if http_server is not None:
            print(f"sentiment-server: metrics on {settings.host}:{http_server.server_port}", flush=True)
        watches = [pool.run(on_restart=counters.worker_restarts.inc)]
        if supervisor is not None:
            watches.append(supervisor.run(on_restart=counters.triton_restarts.inc))
        await _wait_for_signal(first_failure(*watches))
    finally:
        if admin is not None:
            await admin.stop(0)  # no rollout starts while draining
        log.info("draining %d workers for up to %.1fs", count, settings.grace_s)
        await pool.stop(settings.grace_s)
        if versions is not None:
            await versions.close()
        if http_server is not None:
            http_server.shutdown()


def _export(settings: ExportSettings, *, demo: bool = False, source: str | None = None) -> None:
    from . import core_budget
    from .tooling.export import export_model

    instances = core_budget.default_instance_count(settings.device)
    threads = core_budget.default_torch_threads(settings.device)
    export_model(
        source or settings.checkpoint,
        settings.model_repository,
        model_name=settings.model_name,
        backend=settings.backend,
        dtype=settings.dtype,
        max_batch_size=settings.max_batch_size,
        instance_count=core_budget.resolve_count(settings.instance_count, instances, "--instance-count"),
        device=settings.device,
        torch_threads=core_budget.resolve_count(settings.torch_threads, threads, "--torch-threads"),
        force=settings.force,
        demo=demo,
    )


def _hub_unreachable(checkpoint: str) -> str | None:
    """Why the Hub cannot serve `checkpoint` (None when it can, or when it is a local directory).

    One quick metadata call instead of letting the download retry for a minute.
    """
    if Path(checkpoint).exists():
        return None
    from huggingface_hub import HfApi

    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
    try:
        HfApi().model_info(checkpoint, timeout=5)
    except Exception as exc:
        return f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else 'no detail'}"
    return None


def _export_or_demo(settings: UpSettings) -> None:
    """Export the checkpoint; without the Hub (and no local checkpoint) fall back to a demo model."""
    from .model_artifact import has_model, read_model_info

    existing = None
    if has_model(settings.model_repository, settings.model_name):
        existing = read_model_info(settings.model_repository, settings.model_name)
        if not existing.demo and not settings.force:
            # Serve what is there. A different --checkpoint goes through export, which stages it as the
            # next version (served after a rollout; --force replaces the model); the default checkpoint
            # never displaces an exported model.
            if settings.checkpoint not in (existing.source, DEFAULT_CHECKPOINT):
                _export(settings)
            return
    reason = _hub_unreachable(settings.checkpoint) if settings.offline_demo else None
    if reason is None:
        # A demo model is always replaced once the real checkpoint can be had.
        _export(replace(settings, force=settings.force or bool(existing and existing.demo)))
        return
    if existing is not None:
        log.warning(
            "cannot reach the Hugging Face Hub for %r (%s): serving the DEMO model again", settings.checkpoint, reason
        )
        return
    log.warning(
        "cannot reach the Hugging Face Hub for %r (%s): serving a DEMO model with random weights, "
        "its labels mean nothing; pass --checkpoint DIR to serve a local checkpoint",
        settings.checkpoint,
        reason,
    )
    from .tooling.checkpoints import build_tiny_checkpoint

    with tempfile.TemporaryDirectory(prefix="sentiment-demo-") as tmp:
        checkpoint = build_tiny_checkpoint(Path(tmp) / "demo-checkpoint", demo=True)
        _export(settings, demo=True, source=str(checkpoint))


@contextmanager
def _embedded_triton(settings: TritonSettings) -> Iterator[EmbeddedTriton]:
    """The embedded Triton with the model ready; stopped on the way out."""
    from .backend.triton_process import EmbeddedTriton

    with EmbeddedTriton(
        settings.model_repository,
        host=settings.triton_host,
        grpc_port=settings.triton_port,
        metrics_port=settings.triton_metrics_port,
    ) as triton:
        triton.wait_ready(timeout_s=settings.triton_ready_timeout_s)  # strict readiness: every model loaded
        yield triton


def _supervisor(triton: EmbeddedTriton, settings: TritonSettings) -> TritonSupervisor:
    from .backend.triton_supervisor import RestartPolicy, TritonSupervisor

    policy = RestartPolicy(max_restarts=settings.triton_max_restarts, window_s=settings.triton_restart_window_s)
    return TritonSupervisor(triton, None, policy, settings.triton_ready_timeout_s)


def _checkpoints(settings: UpSettings) -> list[UpSettings]:
    """One settings object per model: `--checkpoint` is one checkpoint (for `--model-name`) or name=checkpoint pairs."""
    if "=" not in settings.checkpoint:
        return [settings]
    pairs = [item.strip().partition("=") for item in settings.checkpoint.split(",") if item.strip()]
    if any(not name or not sep or not checkpoint for name, sep, checkpoint in pairs):
        raise SystemExit(f"--checkpoint {settings.checkpoint!r}: expected CHECKPOINT or NAME=CHECKPOINT,...")
    return [replace(settings, model_name=name, checkpoint=checkpoint) for name, _, checkpoint in pairs]


async def _up(settings: UpSettings) -> None:
    each = _checkpoints(settings)
    for model_settings in each:
        _export_or_demo(model_settings)
    if settings.model_name not in {s.model_name for s in each}:
        settings = replace(settings, model_name=each[0].model_name)  # the first one named is the default
    with _embedded_triton(settings) as triton:
        await _serve(replace(pick(ServeSettings, settings), triton_url=triton.grpc_url), _supervisor(triton, settings))


async def _triton(settings: TritonSettings) -> None:
    with _embedded_triton(settings) as triton:
        supervisor = _supervisor(triton, settings)
        print(f"sentiment-server: Triton ready at {triton.grpc_url}", flush=True)
        await _wait_for_signal(supervisor.run())


def _switch(settings: AdminSettings, command: str) -> None:
    """Ask a running front-end's admin port to roll a model out (or back), and say what answers now."""
    import grpc
    from sentiment.v1 import admin_pb2, admin_pb2_grpc

    metadata = (("x-api-key", settings.api_key),) if settings.api_key else ()
    with grpc.insecure_channel(settings.admin_url) as channel:
        stub: Any = admin_pb2_grpc.ModelAdminServiceStub(channel)  # type: ignore[no-untyped-call]
        allow = settings.allow_label_change
        try:
            if command == "rollout":
                request: Any = admin_pb2.RolloutRequest(
                    model=settings.model, version=settings.version, allow_label_change=allow
                )
                done = stub.Rollout(request, metadata=metadata, timeout=settings.timeout_s)
            else:
                request = admin_pb2.RollbackRequest(model=settings.model, allow_label_change=allow)
                done = stub.Rollback(request, metadata=metadata, timeout=settings.timeout_s)
        except grpc.RpcError as exc:
            raise RuntimeError(f"{command} refused: {exc.code().name}: {exc.details()}") from None
    if done.previous_version == done.model_version:
        print(f"sentiment-server: model {done.model} already answers with version {done.model_version}")
    else:
        print(
            f"sentiment-server: model {done.model} answers with version {done.model_version} "
            f"(was {done.previous_version})"
        )


def _versions(settings: VersionsSettings) -> None:
    """List a model's versions and the ones Triton serves; with --serve, set those (a Triton that polls follows)."""
    from .model_artifact import model_versions, serving_versions, set_serving_versions

    repository, name = settings.model_repository, settings.model_name
    exported = model_versions(repository, name)
    if not exported:
        raise RuntimeError(f"model repository {repository} has no model {name!r}")
    if settings.serve:
        wanted = [v.strip() for v in settings.serve.split(",") if v.strip()]
        unknown = [v for v in wanted if v not in exported]
        if unknown:
            raise RuntimeError(f"model {name!r} has no version {', '.join(unknown)} (it has {', '.join(exported)})")
        set_serving_versions(repository, name, wanted)
    print(f"{name}: versions {', '.join(exported)}; Triton serves {', '.join(serving_versions(repository, name))}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sentiment-server", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, cls, help_text in (
        ("export", ExportSettings, "export a Hugging Face checkpoint to a Triton model repository"),
        ("triton", TritonSettings, "run the embedded Triton (tritonserver from the nvidia-pytriton wheel)"),
        ("serve", ServeSettings, "run the gRPC front-end against a running Triton"),
        ("up", UpSettings, "export if needed, start the embedded Triton and the front-end"),
        ("rollout", AdminSettings, "switch a running service's model to a new version (its admin port)"),
        ("rollback", AdminSettings, "switch a running service's model back to its previous version"),
        ("versions", VersionsSettings, "list a model's versions, or set the ones Triton serves (--serve)"),
    ):
        add_arguments(commands.add_parser(name, help=help_text, description=help_text), cls)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    commands: dict[str, type[ModelSettings | AdminSettings]] = {
        "export": ExportSettings,
        "triton": TritonSettings,
        "serve": ServeSettings,
        "up": UpSettings,
        "rollout": AdminSettings,
        "rollback": AdminSettings,
        "versions": VersionsSettings,
    }
    settings = settings_from(commands[args.command], args)
    configure_logging(
        getattr(settings, "log_level", "INFO"),
        getattr(settings, "log_format", "text"),
        os.environ.get("SENTIMENT_WORKER", ""),  # set by the parent of front-end workers
    )
    try:
        if isinstance(settings, UpSettings):
            asyncio.run(_up(settings))
        elif isinstance(settings, ServeSettings):
            asyncio.run(_serve(settings))
        elif isinstance(settings, TritonSettings):
            asyncio.run(_triton(settings))
        elif isinstance(settings, ExportSettings):
            _export(settings)
        elif isinstance(settings, VersionsSettings):
            _versions(settings)
        elif isinstance(settings, AdminSettings):
            _switch(settings, args.command)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # one clear line for the operator; details with --log-level DEBUG
        log.debug("fatal", exc_info=True)
        print(f"sentiment-server: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
