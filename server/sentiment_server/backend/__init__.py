"""Where the model runs: the Triton client (the only module that speaks to Triton) and the embedded tritonserver."""

from pathlib import Path

# The Python-backend model file that export copies next to model.pt; it runs inside Triton and
# imports nothing from this package.
PYTHON_MODEL_SOURCE = Path(__file__).with_name("triton_python_model.py")
