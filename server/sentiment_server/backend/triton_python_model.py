"""Triton Python-backend model: runs the exported TorchScript `model.pt`.

`export` copies this file to `<model>/1/model.py`. It runs inside Triton's
Python backend stub, where `triton_python_backend_utils` exists; it imports
nothing from `sentiment_server`, so the stub needs only torch and numpy.

One execute() call gets every request the dynamic batcher gathered (the
inputs allow ragged batches, so their lengths may differ). Their rows are
sorted by length and cut into forward passes that waste the least compute on
padding (`plan_groups`, the same cost model as the front-end's coalescer:
a pass costs `batch_overhead_tokens` plus its padded tokens); without that
parameter (GPU) they run right-padded to the longest in ONE pass. The logits
go back to each request in its own row order. A bad request gets its own
error response; it never fails the others or crashes the stub.

A model that takes segment ids (model_info.json's "inputs", else the config's
inputs, name `token_type_ids`) gets them as a third input, padded with 0.
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
TOKEN_TYPE_IDS = "token_type_ids"
BASE_INPUTS = (INPUT_IDS, ATTENTION_MASK)
DEFAULT_OUTPUT = "logits__0"
MODEL_FILE = "model.pt"
INFO_FILE = "model_info.json"
MAX_PASS_TOKENS = 4096  # padded tokens per forward pass when passes are planned (CPU caches)


def plan_groups(lengths, max_texts, max_tokens, overhead_tokens):
    """Group sizes for texts sorted by length: least `overhead + n * longest` in total.

    A copy of sentiment_server.core.batch_planning.plan_groups (this file imports nothing
    from sentiment_server); tests check that the two agree.
    """
    count = len(lengths)
    one_group = count * lengths[-1] if count else 0
    if 0 < count <= max_texts and one_group <= max_tokens and one_group - sum(lengths) <= overhead_tokens:
        return [count]  # a further group would cost an overhead and save at most this padding
    best = [0.0] + [float("inf")] * count
    cut = [0] * (count + 1)
    for j in range(1, count + 1):
        longest = lengths[j - 1]
        fits = max(1, min(max_texts, max_tokens // max(1, longest)))
        for i in range(max(0, j - fits), j):
            cost = best[i] + overhead_tokens + (j - i) * longest
            if cost < best[j]:
                best[j], cut[j] = cost, i
    sizes = []
    j = count
    while j > 0:
        sizes.append(j - cut[j])
        j = cut[j]
    return sizes[::-1]


def _stack(parts, pad):
    """The requests' [rows, length] arrays as one, each right-padded with `pad` to the widest."""
    if len(parts) == 1:
        return parts[0]
    out = np.full((sum(p.shape[0] for p in parts), max(p.shape[1] for p in parts)), pad, dtype=np.int64)
    start = 0
    for part in parts:
        out[start : start + part.shape[0], : part.shape[1]] = part
        start += part.shape[0]
    return out


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
        # Below 0: one pass per execute(), padded to the longest row.
        self.overhead_tokens = int(_parameter(config, "batch_overhead_tokens", "-1"))

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
        inputs = info.get("inputs") or [i.get("name") for i in config.get("input", [])]
        self.takes_token_type_ids = TOKEN_TYPE_IDS in inputs
        self.type_vocab_size = int(extra["type_vocab_size"]) if "type_vocab_size" in extra else None

        with warnings.catch_warnings():  # torch >= 2.10: "`torch.jit.load` is deprecated"
            warnings.simplefilter("ignore", DeprecationWarning)
            self.model = torch.jit.load(os.path.join(version_dir, MODEL_FILE), map_location=self.device)
        self.model.eval()

        # Warm-up: a model that cannot run on this device fails here (model not
        # ready) instead of per request. Two passes: TorchScript's profiling executor
        # records shapes on the first and builds its optimized graph on the second,
        # so the first callers after a (re)start do not pay for either.
        started = time.perf_counter()
        ids = np.full((1, 8), self.pad_token_id, dtype=np.int64)
        mask = np.ones((1, 8), dtype=np.int64)
        for _ in range(2):
            self._forward([ids], [mask], [np.zeros_like(ids)] if self.takes_token_type_ids else None)
        self.logger.log_info(
            f"{self.model_name}: loaded {MODEL_FILE} on {self.device} "
            f"(torch {torch.__version__} from {os.path.dirname(torch.__file__)}, "
            f"{torch.get_num_threads()} threads, dtype {_parameter(config, 'dtype', '?')}, "
            f"warm-up {1000 * (time.perf_counter() - started):.0f} ms)"
        )

    def _read(self, request):
        """(input_ids, attention_mask, token_type_ids or None), checked; _BadRequest says what is wrong."""
        names = (*BASE_INPUTS, TOKEN_TYPE_IDS) if self.takes_token_type_ids else BASE_INPUTS
        arrays = []
        for name in names:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is None:
                raise _BadRequest(f"missing input {name!r}")
            array = tensor.as_numpy()
            if array.ndim != 2:
                raise _BadRequest(f"{name} must be [batch, length], got shape {list(array.shape)}")
            arrays.append(array.astype(np.int64, copy=False))
        ids, mask = arrays[0], arrays[1]
        for name, array in zip(names[1:], arrays[1:], strict=True):
            if array.shape != ids.shape:
                raise _BadRequest(f"input_ids {list(ids.shape)} and {name} {list(array.shape)} differ in shape")
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
        types = arrays[2] if self.takes_token_type_ids else None
        if types is not None:
            top = self.type_vocab_size
            if types.min() < 0 or (top is not None and types.max() >= top):
                raise _BadRequest(f"token_type_ids must be in [0, {top})" if top else "token_type_ids must be >= 0")
        return ids, mask, types

    def _forward(self, ids_list, mask_list, types_list=None):
        """Run the rows of every request (sorted and grouped, or in one pass); logits per request (float32).

        `types_list`: each request's token_type_ids, for a model that takes them.
        """
        ids = _stack(ids_list, self.pad_token_id)
        mask = _stack(mask_list, 0)
        types = None if types_list is None else _stack(types_list, 0)
        # A row's length: up to its last attended token; columns past it change nothing.
        lengths = mask.shape[1] - np.argmax(mask[:, ::-1] != 0, axis=1)
        if self.overhead_tokens < 0:
            passes = [np.arange(len(lengths))]
        else:
            order = np.argsort(lengths, kind="stable")
            sizes = plan_groups(lengths[order].tolist(), len(order), MAX_PASS_TOKENS, self.overhead_tokens)
            passes = np.split(order, np.cumsum(sizes)[:-1])
        logits = None
        for rows in passes:
            width = int(lengths[rows].max())
            out = self._run(ids[rows, :width], mask[rows, :width], None if types is None else types[rows, :width])
            if logits is None:
                logits = np.empty((len(lengths), out.shape[1]), dtype=np.float32)
            logits[rows] = out
        return np.split(logits, np.cumsum([len(i) for i in ids_list])[:-1])

    def _run(self, ids, mask, types):
        arrays = (ids, mask) if types is None else (ids, mask, types)
        tensors = [torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64)).to(self.device) for a in arrays]
        with torch.inference_mode(), torch.jit.optimized_execution(False):
            return self.model(*tensors).float().cpu().numpy()

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
            types_list = [g[3] for g in good] if self.takes_token_type_ids else None
            try:
                outputs = self._forward([g[1] for g in good], [g[2] for g in good], types_list)
                for (index, *_), logits in zip(good, outputs, strict=True):
                    responses[index] = self._response(logits)
            except Exception as exc:
                if len(good) == 1:
                    responses[good[0][0]] = _error(f"inference failed: {exc}", invalid=False)
                else:
                    # Find the culprit: each request alone.
                    self.logger.log_warn(f"{self.model_name}: batched forward failed ({exc}); retrying one by one")
                    for index, ids, mask, types in good:
                        try:
                            one_types = None if types is None else [types]
                            responses[index] = self._response(self._forward([ids], [mask], one_types)[0])
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
