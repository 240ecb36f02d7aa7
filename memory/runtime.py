"""Which ONNX Runtime is installed, and whether a CUDA GPU can run it — asked quietly.

``onnxruntime`` and ``onnxruntime-gpu`` both install the ``onnxruntime`` module; with both
present one silently shadows the other, so we refuse to guess and say how to fix it.
Probing CUDA through onnxruntime prints pages of errors on a machine without the CUDA
libraries, so we look for the driver and a device ourselves first.
"""

from __future__ import annotations

import ctypes
import importlib.metadata as metadata
import logging
from dataclasses import dataclass

from bus.errors import ConfigError

log = logging.getLogger("sophia.memory.runtime")

_CPU_DIST = "onnxruntime"
_GPU_DIST = "onnxruntime-gpu"
_FIX = (
    "pip uninstall -y onnxruntime onnxruntime-gpu && "
    "pip install 'sophia[{which}]'  (exactly one of sophia[cpu] or sophia[gpu])"
)


@dataclass(frozen=True, slots=True)
class RuntimeChoice:
    """The execution provider an embedder session will use, and why."""

    device: str  # "cpu" | "cuda"
    providers: tuple[str, ...]
    reason: str


def installed_distributions() -> set[str]:
    """Names of the ONNX Runtime distributions installed in this environment."""
    found: set[str] = set()
    for name in (_CPU_DIST, _GPU_DIST):
        try:
            metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        found.add(name)
    return found


def check_installation(found: set[str] | None = None) -> str:
    """Return the one installed ONNX Runtime distribution.

    Raises ConfigError when none or both are installed, with the command that fixes it.
    """
    found = installed_distributions() if found is None else found
    if found == {_CPU_DIST, _GPU_DIST}:
        raise ConfigError(
            "both onnxruntime and onnxruntime-gpu are installed and shadow each other; "
            "fix: " + _FIX.format(which="gpu")
        )
    if not found:
        raise ConfigError("no ONNX Runtime is installed; fix: " + _FIX.format(which="cpu"))
    return next(iter(found))


def cuda_device_count() -> int:
    """Number of CUDA devices the driver reports; 0 without a driver (never raises)."""
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return 0
    count = ctypes.c_int(0)
    try:
        if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
            return 0
    except AttributeError:
        return 0
    return count.value


def choose(device: str = "auto", found: set[str] | None = None) -> RuntimeChoice:
    """Pick CUDA when asked or available (GPU package, CUDA provider, a device), else CPU.

    Raises ConfigError when ``device="cuda"`` cannot be honoured, or on a bad installation.
    """
    dist = check_installation(found)
    cpu = RuntimeChoice("cpu", ("CPUExecutionProvider",), "")
    if device == "cpu":
        return RuntimeChoice("cpu", cpu.providers, "asked for cpu")
    problem = _cuda_problem(dist)
    if problem is None:
        return RuntimeChoice(
            "cuda", ("CUDAExecutionProvider", "CPUExecutionProvider"), "cuda device found"
        )
    if device == "cuda":
        raise ConfigError(f"embed_device: cuda asked for but {problem}")
    return RuntimeChoice("cpu", cpu.providers, problem)


def _cuda_problem(dist: str) -> str | None:
    if dist != _GPU_DIST:
        return "onnxruntime-gpu is not installed"
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        return "this onnxruntime build has no CUDA provider"
    if cuda_device_count() < 1:
        return "no CUDA driver or device"
    return None
