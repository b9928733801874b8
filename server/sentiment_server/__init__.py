"""sentiment-server: a gRPC front-end for Hugging Face text classifiers served by NVIDIA Triton.

Packages, imports pointing down only (transport -> core -> backend; tooling apart):

    transport/  the gRPC request path: server wiring, servicer, health, auth, admission, metrics
    core/       the pipeline's three steps: tokenize, coalesce into batches, post-process
    backend/    where the model runs: the Triton client, the embedded tritonserver, the Python-backend model file
    tooling/    offline model tooling: export a checkpoint to a Triton repository, tiny test checkpoints

Shared leaves: `errors` (the one error table), `model_artifact` (the exported model's format),
`settings`, `tracing`, `logging_setup`; `cli` and `service` wire the parts together.
"""
