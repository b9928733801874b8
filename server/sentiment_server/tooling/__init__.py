"""Offline model tooling, never on a request's path: export a checkpoint, build tiny checkpoints."""
