"""This machine's hardware, as fingerprints record it."""
from __future__ import annotations

import functools
import os
import platform


def physical_cores() -> int:
    try:
        import psutil
        return psutil.cpu_count(logical=False) or os.cpu_count() or 1
    except ImportError:
        return os.cpu_count() or 1


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> dict[str, str]:
    """The first value of each /proc/cpuinfo field (the first processor's); empty where there is none."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, sep, value = line.partition(":")
                if sep:
                    fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return fields


def cpu_model() -> str:
    fields = _cpuinfo()
    return fields["model name"] if "model name" in fields else platform.processor() or platform.machine()


def cpu_id() -> str:
    """Vendor, family and model numbers: they tell CPU generations apart where a VM calls them all 'AMD EPYC'."""
    fields = _cpuinfo()
    if "cpu family" not in fields:
        return platform.processor() or platform.machine()
    return f"{fields.get('vendor_id', '?')} family {fields['cpu family']} model {fields.get('model', '?')}"


def cpu_flags() -> str:
    """A short digest of the SIMD features that change kernel choice."""
    flags = set(_cpuinfo().get("flags", "").split())
    keep = ["sse4_2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_tile"]
    return ",".join(k for k in keep if k in flags)


def gpu_name() -> str:
    import shutil
    import subprocess
    if not shutil.which("nvidia-smi"):
        return ""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=10).stdout
        return out.strip().splitlines()[0] if out.strip() else ""
    except (OSError, subprocess.SubprocessError):
        return ""


HARDWARE_KEYS = ("cpu", "cpu_id", "cpu_flags", "physical_cores")  # the fingerprint's fields hardware() reads


def hardware() -> dict:
    """The parts of a fingerprint that change latencies: a predictor trained elsewhere does not apply here."""
    return dict(zip(HARDWARE_KEYS, (cpu_model(), cpu_id(), cpu_flags(), physical_cores())))
