"""The machine a benchmark ran on, in one line: `lscpu`'s model name and whether the CPU has native bf16 math
(AVX-512-BF16 / AMX, where ``mixed_precision="auto"`` trains in bf16) or not (AVX2-only: fp32). No torch import,
so bench/perf_report.py can use it before it starts any worker."""

from __future__ import annotations

import os
import platform
import re
import subprocess


def cpu_name() -> str:
    """`lscpu`'s "Model name"."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
        return next(line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name"))
    except (OSError, subprocess.CalledProcessError, StopIteration):
        return platform.processor() or "unknown CPU"


def cpu_flag(flag: str) -> str:
    """"yes" / "no" / "unknown": whether /proc/cpuinfo lists ``flag``."""
    try:
        with open("/proc/cpuinfo") as f:
            return "yes" if re.search(rf"\b{flag}\b", f.read()) else "no"
    except OSError:
        return "unknown"


def load_average() -> str:
    """The 1/5/15-minute load average, e.g. '0.5/1.2/2.0'."""
    try:
        return "/".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def cpu_line() -> str:
    """e.g. 'machine: AMD EPYC, 2 CPUs, avx512_bf16: yes, amx_bf16: no, load average 0.5/1.2/2.0'"""
    return (f"machine: {cpu_name()}, {os.cpu_count()} CPUs, avx512_bf16: {cpu_flag('avx512_bf16')}, "
            f"amx_bf16: {cpu_flag('amx_bf16')}, load average {load_average()}")


if __name__ == "__main__":
    print(cpu_line())
