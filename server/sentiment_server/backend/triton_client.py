"""Step 2: one Triton server, spoken to over gRPC: readiness, model checks, inference.

The Triton modules are the only ones that talk to Triton. They speak its gRPC
protocol with tritonclient's generated messages, on one grpc.aio channel per
endpoint. Batches travel on open `ModelStreamInfer` calls (`triton_stream`);
Triton's errors become this service's errors at the boundary (`triton_errors`);
`triton_pool` spreads batches over endpoints and retries.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt
from tritonclient.grpc import service_pb2, service_pb2_grpc

from ..errors import BackendUnavailable, DeadlineExceeded, ModelMismatch, TritonFailure
from ..model_artifact import ATTENTION_MASK, INPUT_IDS, TOKEN_TYPE_IDS, ModelInfo
from .triton_errors import describe, rpc_error
from .triton_stream import InferStream

log = logging.getLogger(__name__)

_CAUSE_LOG_INTERVAL_S = 5.0  # an endpoint's failures are logged at most this often
_PROBE_AFTER_FAILURES = 3  # consecutive data-path failures that make an endpoint prove itself again

# Reconnect fast after a Triton restart (gRPC's default backoff grows to 120 s),
# and notice a dead peer through keepalive instead of waiting on TCP.
CHANNEL_ARGS: list[tuple[str, int]] = [
    ("grpc.max_send_message_length", -1),
    ("grpc.max_receive_message_length", -1),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
]


@dataclass(frozen=True)
class TritonTLS:
    """PEM files; None: the system's roots, and no client certificate."""

    root_certificates: str | None = None
    private_key: str | None = None
    certificate_chain: str | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        def read(path: str | None) -> bytes | None:
            return Path(path).read_bytes() if path else None

        return grpc.ssl_channel_credentials(
            read(self.root_certificates), read(self.private_key), read(self.certificate_chain)
        )


def open_channel(url: str, tls: TritonTLS | None) -> grpc.aio.Channel:
    """A channel to one Triton, with this module's reconnect and keepalive settings."""
    if tls is None:
        return grpc.aio.insecure_channel(url, options=CHANNEL_ARGS)
    return grpc.aio.secure_channel(url, tls.credentials(), options=CHANNEL_ARGS)


@dataclass(eq=False)  # identity: endpoints live in sets
class TritonEndpoint:
    """One Triton server: readiness, model checks and inference for one model."""

    url: str
    model_name: str
    model_version: str = ""
    tls: TritonTLS | None = None
    streams: bool = True  # False: every batch is a unary call
    ready: bool = False
    in_flight: int = 0
    instances: int = 1  # the model's instances in this Triton, read by check_model
    # Set after repeated data-path failures: the endpoint counts as ready again only once an inference works.
    needs_probe: bool = False
    _failures: int = field(default=0, init=False, repr=False)  # consecutive failed batches
    _token_type_ids: bool = field(default=False, init=False, repr=False)  # the checked model takes them (probe)
    _last_cause_logged: float = field(default=float("-inf"), init=False, repr=False)
    _channel: grpc.aio.Channel = field(init=False, repr=False)
    _stub: Any = field(init=False, repr=False)
    _streams: list[InferStream] = field(default_factory=list, init=False, repr=False)

    def __post_init__(self) -> None:
        self._open_channel()

    def _open_channel(self) -> None:
        self._channel = open_channel(self.url, self.tls)
        self._stub = service_pb2_grpc.GRPCInferenceServiceStub(self._channel)

    async def is_model_ready(self, timeout_s: float) -> bool:
        request = service_pb2.ModelReadyRequest(name=self.model_name, version=self.model_version)
        try:
            self.ready = bool((await self._stub.ModelReady(request, timeout=timeout_s)).ready)
        except grpc.aio.AioRpcError:
            self.ready = False
        if not self.ready:
            self._close_streams()  # a Triton that is shutting down waits for them
        return self.ready

    async def check_model(self, info: ModelInfo, timeout_s: float = 10.0) -> str:
        """Verify Triton's model against the tokenizer and labels; return the output tensor name."""
        request = service_pb2.ModelMetadataRequest(name=self.model_name, version=self.model_version)
        try:
            meta = await self._stub.ModelMetadata(request, timeout=timeout_s)
        except grpc.aio.AioRpcError as exc:
            raise rpc_error(exc) from exc
        inputs = {t.name: t for t in meta.inputs}
        for name in info.inputs:
            if name not in inputs:
                raise ModelMismatch(f"{self.url}: model {self.model_name!r} has no input {name!r}: {sorted(inputs)}")
            if inputs[name].datatype != "INT64":
                raise ModelMismatch(f"{self.url}: input {name!r} is {inputs[name].datatype}, expected INT64")
        unknown = sorted(set(inputs) - set(info.inputs))
        if unknown:  # Triton would refuse every request without them
            raise ModelMismatch(
                f"{self.url}: model {self.model_name!r} takes inputs {unknown} that the exported model "
                f"(inputs {info.inputs}) does not"
            )
        if len(meta.outputs) != 1:
            raise ModelMismatch(f"{self.url}: expected one output (logits), found {len(meta.outputs)}")
        out = meta.outputs[0]
        dims = [int(d) for d in out.shape]
        if out.datatype != "FP32" or not dims or dims[-1] != len(info.labels):
            raise ModelMismatch(
                f"{self.url}: output {out.name!r} is {out.datatype}{dims}, "
                f"expected FP32 with {len(info.labels)} labels ({', '.join(info.labels)})"
            )
        self._token_type_ids = info.takes_token_type_ids
        self.instances = await self._instance_count(timeout_s)
        return str(out.name)

    async def _instance_count(self, timeout_s: float) -> int:
        request = service_pb2.ModelConfigRequest(name=self.model_name, version=self.model_version)
        try:
            config = (await self._stub.ModelConfig(request, timeout=timeout_s)).config
        except grpc.aio.AioRpcError as exc:
            raise rpc_error(exc) from exc
        return model_instances(config)

    def _request(
        self,
        output_name: str,
        input_ids: npt.NDArray[np.int64],
        attention_mask: npt.NDArray[np.int64],
        token_type_ids: npt.NDArray[np.int64] | None = None,
    ) -> Any:
        request = service_pb2.ModelInferRequest(model_name=self.model_name, model_version=self.model_version)
        arrays = [(INPUT_IDS, input_ids), (ATTENTION_MASK, attention_mask)]
        if token_type_ids is not None:
            arrays.append((TOKEN_TYPE_IDS, token_type_ids))
        for name, array in arrays:
            request.inputs.add(name=name, datatype="INT64", shape=array.shape)
            request.raw_input_contents.append(np.ascontiguousarray(array, dtype=np.int64).tobytes())
        request.outputs.add(name=output_name)
        return request

    async def infer(
        self,
        output_name: str,
        input_ids: npt.NDArray[np.int64],
        attention_mask: npt.NDArray[np.int64],
        timeout_s: float,
        headers: Mapping[str, str] | None = None,
        token_type_ids: npt.NDArray[np.int64] | None = None,
    ) -> npt.NDArray[np.float32]:
        """`headers` travel as gRPC metadata (the W3C trace context, when tracing): such a batch goes
        as a unary call, since a message on a stream cannot carry metadata of its own.
        `token_type_ids` (shaped like input_ids) go as a third input, for a model that takes them."""
        if timeout_s <= 0:
            raise DeadlineExceeded("deadline exceeded before inference")
        request = self._request(output_name, input_ids, attention_mask, token_type_ids)
        self.in_flight += 1
        try:
            if headers or not self.streams:
                try:
                    response = await self._stub.ModelInfer(
                        request, metadata=tuple((headers or {}).items()), timeout=timeout_s
                    )
                except grpc.aio.AioRpcError as exc:
                    raise rpc_error(exc) from exc
            else:
                response = await self._idle_stream().infer(request, timeout_s)
        except BackendUnavailable as exc:
            self.ready = False
            await self._data_path_failed(exc)
            raise
        finally:
            self.in_flight -= 1
        self._failures = 0
        return _logits(response, output_name, len(input_ids))

    async def _data_path_failed(self, error: BackendUnavailable) -> None:
        """Say why (at most every few seconds); after repeated failures start over with a new channel."""
        self._failures += 1
        now = time.monotonic()
        if now - self._last_cause_logged >= _CAUSE_LOG_INTERVAL_S:
            self._last_cause_logged = now
            cause = error.__cause__
            log.warning(
                "triton endpoint %s: batch failed (%s), %d in a row",
                self.url,
                describe(cause) if cause is not None else error,
                self._failures,
            )
        if self._failures == _PROBE_AFTER_FAILURES:
            log.warning("triton endpoint %s: new channel and streams; not ready until an inference succeeds", self.url)
            self.needs_probe = True
            self._close_streams()
            old = self._channel
            self._open_channel()
            await old.close()

    async def probe(self, output_name: str, timeout_s: float) -> bool:
        """One tiny inference on a unary call: does the data path work, whatever ModelReady says?"""
        ids = np.zeros((1, 1), dtype=np.int64)
        request = self._request(output_name, ids, np.ones_like(ids), ids if self._token_type_ids else None)
        try:
            await self._stub.ModelInfer(request, timeout=timeout_s)
        except grpc.aio.AioRpcError as exc:
            log.warning("triton endpoint %s: probe inference failed: %s", self.url, describe(exc))
            return False
        log.info("triton endpoint %s: probe inference succeeded", self.url)
        self.needs_probe = False
        self._failures = 0
        return True

    def _idle_stream(self) -> InferStream:
        self._streams = [stream for stream in self._streams if stream.is_open]
        for stream in self._streams:
            if stream.is_idle:
                return stream
        stream = InferStream(self._stub)  # as many as batches in flight: the coalescer bounds them
        self._streams.append(stream)
        return stream

    def _close_streams(self) -> None:
        for stream in self._streams:
            stream.close()
        self._streams = []

    async def close(self) -> None:
        self._close_streams()
        await self._channel.close()


def model_instances(config: Any) -> int:
    """Instances in a loaded model's config: each group's count, per GPU for a GPU group (Triton lists them)."""
    return max(1, sum(int(group.count) * max(1, len(group.gpus)) for group in config.instance_group))


def _logits(response: Any, output_name: str, rows: int) -> npt.NDArray[np.float32]:
    outputs = [i for i, out in enumerate(response.outputs) if out.name == output_name]
    if not outputs or len(response.raw_output_contents) <= outputs[0]:
        raise TritonFailure("triton returned no logits")
    out = response.outputs[outputs[0]]
    if out.datatype != "FP32" or len(out.shape) != 2 or out.shape[0] != rows:
        raise TritonFailure(f"triton returned {out.datatype}{list(out.shape)} logits for {rows} texts")
    return np.frombuffer(response.raw_output_contents[outputs[0]], dtype=np.float32).reshape(rows, int(out.shape[1]))
