"""Which model a command runs: the path given, or the embedded default that ships with ``onnx``.

The default is SqueezeNet from the onnx package's "light" model-zoo networks, so a first
``gpuinfer run`` works straight after ``pip install`` with no download.  It is found through the
installed package, never through a fixed path.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from gpuinfer.cli.errors import UsageError

DEFAULT_MODEL_FILE = "light_squeezenet.onnx"


@dataclass(frozen=True)
class ModelChoice:
    """The model file to load and a sentence saying where it came from."""

    path: Path
    is_default: bool

    @property
    def description(self) -> str:
        if self.is_default:
            return (f"{self.path.name} (default model: SqueezeNet from the onnx package's light "
                    f"model zoo, {self.path})")
        return str(self.path)


def light_models_dir() -> Path:
    """Folder of onnx's light model-zoo networks inside the installed onnx package."""
    import onnx

    return Path(onnx.__file__).resolve().parent / "backend" / "test" / "data" / "light"


def choose_model(arg: Optional[str]) -> ModelChoice:
    """The model the user named, or the embedded default when ``arg`` is None."""
    if arg is not None:
        return ModelChoice(Path(arg), is_default=False)
    path = light_models_dir() / DEFAULT_MODEL_FILE
    if not path.is_file():
        raise UsageError(f"the default model {DEFAULT_MODEL_FILE} is not in the installed onnx package "
                         f"({path.parent}); give a MODEL path")
    return ModelChoice(path, is_default=True)
