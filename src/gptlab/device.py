"""Device and thread selection, and a description of the machine for provenance."""

from __future__ import annotations

import os
import platform
import socket

import torch


def select_device(preferred: str | None = None) -> torch.device:
    """``preferred`` if given (e.g. "cpu", "cuda:1"), else cuda, then mps, then cpu."""
    if preferred and preferred != "auto":
        device = torch.device(preferred)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device={preferred!r} requested but CUDA is not available; use 'auto' or 'cpu'")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise ValueError(f"device={preferred!r} requested but MPS is not available; use 'auto' or 'cpu'")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def set_threads(threads: int | None) -> None:
    """Use ``threads`` CPU threads for torch's intra-op work (Snakemake's ``threads``)."""
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads={threads} must be >= 1")
        torch.set_num_threads(threads)


# CPU features that change which matrix kernels run, hence the last bits of full-precision floats.
_ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile", "asimd", "sve")


def _cpu_model_and_flags() -> tuple[str, list[str]]:
    model, flags = platform.processor() or platform.machine(), []
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model in ("", platform.machine(), platform.processor()):
                    model = value.strip()
                elif key in ("flags", "Features") and not flags:
                    present = set(value.split())
                    flags = [flag for flag in _ISA_FLAGS if flag in present]
    except OSError:  # not Linux: the platform module's answer is all there is
        pass
    return model, flags


def _math_libraries() -> list[str]:
    """The BLAS/oneDNN builds torch reports (``torch.__config__.show()``), one string each."""
    keep = ("Math Kernel Library", "MKL-DNN", "oneDNN", "OpenBLAS")
    found = []
    for line in torch.__config__.show().splitlines():
        line = line.strip(" -")
        if line.startswith("Build settings:"):
            settings = [s.strip() for s in line.removeprefix("Build settings:").split(",")]
            found += [s for s in settings if s.startswith(("BLAS_INFO", "LAPACK_INFO"))]
        elif any(k in line for k in keep):
            found.append(line)
    return found


def describe_machine(device=None) -> dict:
    """Where a result was computed: what makes full-precision floats differ between machines.

    Bitwise equality is only claimed between results whose descriptions agree
    (same CPU model and ISA, same torch and math libraries, same threads).
    """
    model, flags = _cpu_model_and_flags()
    info = {
        "host": socket.gethostname(),
        "cpu": model,
        "cpu_count": os.cpu_count(),
        "isa_flags": flags,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
        "torch": str(torch.__version__),
        "math_libraries": _math_libraries(),
    }
    device = torch.device(device) if device is not None else None
    if device is not None:
        info["device"] = str(device)
        if device.type == "cuda":
            info["gpu"] = torch.cuda.get_device_name(device)
            info["cuda"] = torch.version.cuda
    return info
