"""Triton Python-backend model: runs the exported TorchScript `model.pt`.

`export` copies this file to `<model>/1/model.py`. It runs inside Triton's
Python backend stub, where `triton_python_backend_utils` exists; it imports
nothing from `sentiment_server`, so the stub needs only torch and numpy.

One execute() call gets every request the dynamic batcher gathered (the
inputs allow ragged batches, so their lengths may differ): they are
right-padded to the longest and run in ONE forward pass, then the logits are
split back per request. A bad request gets its own error response; it never
fails the others or crashes the stub.
"""

import json
import os
import time
import warnings

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

INPUT_IDS = "input_ids"
ATTENTION_MASK = "attention_mask"
DEFAULT_OUTPUT = "logits__0"
MODEL_FILE = "model.pt"
INFO_FILE = "model_info.json"


class _BadRequest(ValueError):
    """The request itself is wrong (shape, values): INVALID_ARG for that request only."""


def _parameter(config, key, default):
    value = config.get("parameters", {}).get(key, {}).get("string_value")
    return default if value in (None, "") else value


def _error(message, invalid):
    code = None
    if invalid:
        code = getattr(pb_utils.TritonError, "INVALID_ARG", None)
    try:
        error = pb_utils.TritonError(message) if code is None else pb_utils.TritonError(message, code)
    except TypeError:  # releases without error codes
        error = pb_utils.TritonError(message)
    return pb_utils.InferenceResponse(output_tensors=[], error=error)


class TritonPythonModel:
    def initialize(self, args):
        self.logger = pb_utils.Logger
        config = json.loads(args["model_config"])
        self.model_name = args.get("model_name", config.get("name", "?"))
        outputs = config.get("output") or [{"name": DEFAULT_OUTPUT}]
        self.output_name = outputs[0]["name"]

        threads = int(_parameter(config, "torch_num_threads", "0"))
        if threads > 0:
            torch.set_num_threads(threads)

        kind = args.get("model_instance_kind", "CPU")
        if kind == "GPU":
            if torch.cuda.is_available():
                self.device = torch.device("cuda", int(args.get("model_instance_device_id", 0)))
            else:
                self.logger.log_warn(
                    f"{self.model_name}: KIND_GPU instance but torch sees no CUDA device; running on CPU"
                )
                self.device = torch.device("cpu")
        else:
            self.device = torch.device("cpu")

        version_dir = os.path.join(args["model_repository"], args["model_version"])
        info = {}
        try:
            with open(os.path.join(version_dir, INFO_FILE), encoding="utf-8") as f:
                info = json.load(f)
        except (OSError, ValueError):
            self.logger.log_warn(f"{self.model_name}: no readable {INFO_FILE}; input ranges are not checked")
        extra = info.get("extra") or {}
        self.pad_token_id = int(info.get("pad_token_id", 0))
        self.max_length = int(info["max_length"]) if "max_length" in info else None
        self.vocab_size = int(extra["vocab_size"]) if "vocab_size" in extra else None

        with warnings.catch_warnings():  # torch >= 2.10: "`torch.jit.load` is deprecated"
            warnings.simplefilter("ignore", DeprecationWarning)
            self.model = torch.jit.load(os.path.join(version_dir, MODEL_FILE), map_location=self.device)
        self.model.eval()

        # Warm-up: the first call pays for graph set-up, and a model that cannot
        # run on this device fails here (model not ready) instead of per request.
        started = time.perf_counter()
        ids = np.full((1, 8), self.pad_token_id, dtype=np.int64)
        mask = np.ones((1, 8), dtype=np.int64)
        self._forward([ids], [mask])
        self.logger.log_info(
            f"{self.model_name}: loaded {MODEL_FILE} on {self.device} "
            f"(torch {torch.__version__} from {os.path.dirname(torch.__file__)}, "
            f"{torch.get_num_threads()} threads, dtype {_parameter(config, 'dtype', '?')}, "
            f"warm-up {1000 * (time.perf_counter() - started):.0f} ms)"
        )

    def _read(self, request):
        arrays = []
        for name in (INPUT_IDS, ATTENTION_MASK):
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is None:
                raise _BadRequest(f"missing input {name!r}")
            array = tensor.as_numpy()
            if array.ndim != 2:
                raise _BadRequest(f"{name} must be [batch, length], got shape {list(array.shape)}")
            arrays.append(array.astype(np.int64, copy=False))
        ids, mask = arrays
        if ids.shape != mask.shape:
            raise _BadRequest(f"input_ids {list(ids.shape)} and attention_mask {list(mask.shape)} differ in shape")
        rows, length = ids.shape
        if rows < 1 or length < 1:
            raise _BadRequest(f"empty input of shape {list(ids.shape)}")
        if self.max_length is not None and length > self.max_length:
            raise _BadRequest(f"{length} tokens per text; the model takes at most {self.max_length}")
        if self.vocab_size is not None and (ids.min() < 0 or ids.max() >= self.vocab_size):
            raise _BadRequest(f"token ids must be in [0, {self.vocab_size})")
        if ((mask != 0) & (mask != 1)).any():
            raise _BadRequest("attention_mask must hold only 0 and 1")
        if not mask.any(axis=1).all():
            raise _BadRequest("every text needs at least one token with attention_mask 1")
        return ids, mask

    def _forward(self, ids_list, mask_list):
        """Right-pad, run one forward pass, split the logits back (numpy float32)."""
        # Columns past the last attended token change nothing: drop them.
        lengths = [int(np.flatnonzero(m.any(axis=0))[-1]) + 1 for m in mask_list]
        width = max(lengths)
        rows = [ids.shape[0] for ids in ids_list]
        ids = np.full((sum(rows), width), self.pad_token_id, dtype=np.int64)
        mask = np.zeros((sum(rows), width), dtype=np.int64)
        start = 0
        for part_ids, part_mask, n, length in zip(ids_list, mask_list, rows, lengths, strict=True):
            ids[start : start + n, :length] = part_ids[:, :length]
            mask[start : start + n, :length] = part_mask[:, :length]
            start += n
        with torch.inference_mode(), torch.jit.optimized_execution(False):
            logits = self.model(torch.from_numpy(ids).to(self.device), torch.from_numpy(mask).to(self.device))
        logits = logits.float().cpu().numpy()
        return np.split(logits, np.cumsum(rows)[:-1])

    def execute(self, requests):
        responses = [None] * len(requests)
        good = []
        for index, request in enumerate(requests):
            try:
                good.append((index, *self._read(request)))
            except _BadRequest as exc:
                responses[index] = _error(str(exc), invalid=True)
            except Exception as exc:  # one request's problem stays its own
                responses[index] = _error(f"cannot read the request: {exc}", invalid=True)

        if good:
            try:
                outputs = self._forward([g[1] for g in good], [g[2] for g in good])
                for (index, _, _), logits in zip(good, outputs, strict=True):
                    responses[index] = self._response(logits)
            except Exception as exc:
                if len(good) == 1:
                    responses[good[0][0]] = _error(f"inference failed: {exc}", invalid=False)
                else:
                    # Find the culprit: each request alone.
                    self.logger.log_warn(f"{self.model_name}: batched forward failed ({exc}); retrying one by one")
                    for index, ids, mask in good:
                        try:
                            responses[index] = self._response(self._forward([ids], [mask])[0])
                        except Exception as one_exc:
                            responses[index] = _error(f"inference failed: {one_exc}", invalid=False)
        return responses

    def _response(self, logits):
        return pb_utils.InferenceResponse(
            output_tensors=[pb_utils.Tensor(self.output_name, np.ascontiguousarray(logits))]
        )

    def finalize(self):
        self.model = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
