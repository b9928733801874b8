"""`sentiment-server`: export | triton | serve | up."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import tempfile
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .logging_setup import configure_logging
from .settings import (
    DEFAULT_CHECKPOINT,
    ExportSettings,
    ModelSettings,
    ServeSettings,
    TritonSettings,
    UpSettings,
    add_arguments,
    pick,
    settings_from,
)

if TYPE_CHECKING:
    from .backend.triton_process import EmbeddedTriton
    from .backend.triton_supervisor import TritonSupervisor
    from .transport.metrics import Metrics

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


async def _serve(
    settings: ServeSettings, supervise: Callable[[Metrics], Coroutine[Any, Any, None]] | None = None
) -> None:
    """The front-end until a signal; `supervise` (from `up`) watches the embedded Triton meanwhile."""
    from . import tracing
    from .service import start_front_end

    tracing.configure(settings.otel)
    front = await start_front_end(settings)
    print(f"sentiment-server: serving on {settings.host}:{front.port}", flush=True)
    try:
        await _wait_for_signal(supervise(front.metrics) if supervise is not None else None)
    finally:
        log.info("draining for up to %.1fs", settings.grace_s)
        await front.stop(settings.grace_s)


def _export(settings: ExportSettings, *, demo: bool = False, source: str | None = None) -> None:
    from .tooling.export import export_model

    export_model(
        source or settings.checkpoint,
        settings.model_repository,
        model_name=settings.model_name,
        backend=settings.backend,
        dtype=settings.dtype,
        max_batch_size=settings.max_batch_size,
        instance_count=settings.instance_count,
        device=settings.device,
        torch_threads=settings.torch_threads,
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
            # Serve what is there. A different --checkpoint goes through export, which refuses to replace a
            # model silently (--force replaces it); the default checkpoint never displaces an exported model.
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
        triton.wait_ready(settings.model_name, timeout_s=settings.triton_ready_timeout_s)
        yield triton


def _supervisor(triton: EmbeddedTriton, settings: TritonSettings) -> TritonSupervisor:
    from .backend.triton_supervisor import RestartPolicy, TritonSupervisor

    policy = RestartPolicy(max_restarts=settings.triton_max_restarts, window_s=settings.triton_restart_window_s)
    return TritonSupervisor(triton, settings.model_name, policy, settings.triton_ready_timeout_s)


async def _up(settings: UpSettings) -> None:
    _export_or_demo(settings)
    with _embedded_triton(settings) as triton:
        supervisor = _supervisor(triton, settings)
        await _serve(
            replace(pick(ServeSettings, settings), triton_url=triton.grpc_url),
            lambda metrics: supervisor.run(on_restart=metrics.triton_restarts.inc),
        )


async def _triton(settings: TritonSettings) -> None:
    with _embedded_triton(settings) as triton:
        supervisor = _supervisor(triton, settings)
        print(f"sentiment-server: Triton ready at {triton.grpc_url}", flush=True)
        await _wait_for_signal(supervisor.run())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sentiment-server", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    for name, cls, help_text in (
        ("export", ExportSettings, "export a Hugging Face checkpoint to a Triton model repository"),
        ("triton", TritonSettings, "run the embedded Triton (tritonserver from the nvidia-pytriton wheel)"),
        ("serve", ServeSettings, "run the gRPC front-end against a running Triton"),
        ("up", UpSettings, "export if needed, start the embedded Triton and the front-end"),
    ):
        add_arguments(commands.add_parser(name, help=help_text, description=help_text), cls)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    commands: dict[str, type[ModelSettings]] = {
        "export": ExportSettings,
        "triton": TritonSettings,
        "serve": ServeSettings,
        "up": UpSettings,
    }
    settings = settings_from(commands[args.command], args)
    configure_logging(getattr(settings, "log_level", "INFO"), getattr(settings, "log_format", "text"))
    try:
        if isinstance(settings, UpSettings):
            asyncio.run(_up(settings))
        elif isinstance(settings, ServeSettings):
            asyncio.run(_serve(settings))
        elif isinstance(settings, TritonSettings):
            asyncio.run(_triton(settings))
        elif isinstance(settings, ExportSettings):
            _export(settings)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # one clear line for the operator; details with --log-level DEBUG
        log.debug("fatal", exc_info=True)
        print(f"sentiment-server: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
