"""The package's layout rules: imports point down (transport -> core -> backend), tooling apart, fast tier light."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "server" / "sentiment_server"
LAYERS = ("transport", "core", "backend", "tooling")
# Which of the package's layers each layer may import (the shared leaves, e.g. errors, are open to all).
ALLOWED = {
    "transport": {"transport", "core"},
    "core": {"core"},
    "backend": {"backend"},
    "tooling": {"tooling", "backend", "core"},  # backend: where the Python model file lies; core: batch_costs
}


def _imported_layers(path: Path) -> set[str]:
    """The layers `path` imports from, through relative imports of the package."""
    layer = path.parent.name
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            parts = (node.module or "").split(".")
            if node.level == 1:  # the module's own layer
                found.add(layer)
            elif parts[0] in LAYERS:
                found.add(parts[0])
    return found


def test_imports_point_down() -> None:
    wrong = {
        f"{path.relative_to(PACKAGE)} imports {sorted(_imported_layers(path) - ALLOWED[layer])}"
        for layer in LAYERS
        for path in (PACKAGE / layer).glob("*.py")
        if _imported_layers(path) - ALLOWED[layer]
    }
    assert not wrong


def _loaded(imports: str, modules: tuple[str, ...]) -> list[str]:
    """Which of `modules` a fresh interpreter has loaded after `import <imports>`."""
    code = f"import sys, {imports}; print(','.join(m for m in {modules!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    return [m for m in done.stdout.strip().split(",") if m]


def test_the_fast_tier_loads_no_torch_and_no_tritonclient() -> None:
    """The in-process server and the fake backend's imports, as the fast tier uses them."""
    imports = "sentiment_server.transport.server, sentiment_server.tooling.checkpoints"
    assert _loaded(imports, ("torch", "transformers", "tritonclient")) == []


def test_settings_load_nothing_heavy() -> None:
    """Every CLI command parses its settings first: that must not load numpy, tokenizers or gRPC."""
    assert _loaded("sentiment_server.settings", ("numpy", "tokenizers", "grpc")) == []
