"""Compute settings of the process: CPU threads when no accelerator is present.

``accelerate launch`` on a machine without GPUs sets ``OMP_NUM_THREADS=1`` for the launched script unless
``--cpu`` or ``--num_cpu_threads_per_process`` is given (accelerate 1.15, ``commands/launch.py``), so a recipe
launched the documented way would train on one core. ``configure_cpu_threads`` gives each local process its
share of the physical cores instead, logs the count, and every report records it next to its latencies.
``HFCOMPRESS_NUM_THREADS`` overrides the count.
"""

from __future__ import annotations

import contextlib
import logging
import os

import torch

logger = logging.getLogger(__name__)

THREADS_ENV = "HFCOMPRESS_NUM_THREADS"


def accelerator_available() -> bool:
    has_xpu = hasattr(torch, "xpu") and torch.xpu.is_available()
    return torch.cuda.is_available() or has_xpu or torch.backends.mps.is_available()


def physical_cores() -> int:
    """Cores this process may run on, each core's hyper-threads counted once (Linux topology; else CPUs)."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    cores = set()
    for cpu in cpus:
        try:
            with open(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list") as f:
                cores.add(f.read().strip())
        except OSError:
            cores.add(str(cpu))
    return max(1, len(cores))


def local_processes() -> int:
    """Processes of this job on this machine (torchrun and accelerate set ``LOCAL_WORLD_SIZE``)."""
    return max(1, int(os.environ.get("LOCAL_WORLD_SIZE") or 1))


def configure_cpu_threads() -> int | None:
    """Without an accelerator: set PyTorch's (and child processes' OpenMP) threads to this process's share of
    the physical cores, or to ``$HFCOMPRESS_NUM_THREADS``; log and return the count. With one: None."""
    if accelerator_available():
        return None
    override = os.environ.get(THREADS_ENV)
    threads = int(override) if override else max(1, physical_cores() // local_processes())
    torch.set_num_threads(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)  # processes we start (peak-memory probes) inherit it
    logger.info(
        "CPU run: %d PyTorch threads (%s; %d physical cores, %d local processes)",
        threads,
        f"${THREADS_ENV}" if override else "physical cores / local processes",
        physical_cores(),
        local_processes(),
    )
    return threads


def thread_record() -> dict:
    """What reports write next to their latencies."""
    return {"torch_threads": torch.get_num_threads(), "physical_cores": physical_cores()}


FAST_BF16_FLAGS = ("avx512_bf16", "amx_bf16")  # x86 instructions that make bf16 matmuls faster than fp32


def fast_bf16_cpu() -> bool:
    """Whether this CPU multiplies bf16 matrices natively (avx512_bf16 or AMX, read from /proc/cpuinfo). Without them
    PyTorch's bf16 matmuls on CPU fall back to slow paths (measured on an AVX2-only AMD EPYC: 30 to 250x slower than
    fp32), so bf16 autocast for training only pays where this is true. Arm and other systems: False."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return False
    return any(flag in flags for flag in FAST_BF16_FLAGS)


@contextlib.contextmanager
def mixed_precision_env_kept():
    """transformers 4.57's ``TrainingArguments(bf16=True)`` writes ``ACCELERATE_MIXED_PRECISION=bf16`` into the
    process environment, and every later Trainer of the process then trains under bf16 autocast, even one told
    ``bf16=False``: the variable is restored on exit."""
    saved = os.environ.get("ACCELERATE_MIXED_PRECISION")
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("ACCELERATE_MIXED_PRECISION", None)
        else:
            os.environ["ACCELERATE_MIXED_PRECISION"] = saved
