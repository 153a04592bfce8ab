"""CPU training runs on mimalloc: `speeched train` re-executes itself once with it preloaded.

Why: a CPU training step allocates and frees activations of tens to hundreds of MB whose sizes change with
every batch. glibc's malloc serves anything above 32 MiB with a fresh mmap and unmaps it on free, so every
step faults in and zeroes its activations again (a wav2vec2 + MiniLM step on 2 cores: ~20% of its time).
Keeping freed memory in glibc's own heap (`mallopt(M_MMAP_MAX, 0)` + a high trim threshold) removed that
cost but let the resident size grow from 3.8 to 8.1 GiB over 100 steps (fragmentation). mimalloc, from the
`cmeel-mimalloc` wheel, reuses freed pages: the same speed-up, and the resident size stays flat and lower
(docs/benchmark-notes.md, ninth session). A process's allocator can only be chosen before it starts, hence
LD_PRELOAD and one `execve` of the same command line, before anything heavy is imported.

`SPEECHED_ALLOCATOR` chooses: `auto` (default: mimalloc on Linux when no GPU driver is installed, since it
is measured on CPUs only), `mimalloc` (also with a GPU), `system` (glibc's malloc, no re-exec).
Only the standard library here: `speeched.cli.main` calls this before torch is imported.
"""

from __future__ import annotations

import ctypes.util
import os
import sys
from collections.abc import Callable, Mapping
from importlib import metadata
from pathlib import Path

ENV = "SPEECHED_ALLOCATOR"
CHOICES = ("auto", "mimalloc", "system")
PRELOADED = "SPEECHED_ALLOCATOR_PRELOADED"  # set in the re-executed process: never re-exec twice


class AllocatorChoiceError(ValueError):
    pass


def mimalloc_library() -> Path | None:
    """libmimalloc.so from the installed `cmeel-mimalloc` wheel, or None (not installed, not Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        files = metadata.files("cmeel-mimalloc") or []
        dist = metadata.distribution("cmeel-mimalloc")
    except metadata.PackageNotFoundError:
        return None
    libs = [Path(str(dist.locate_file(f))) for f in files if f.name.startswith("libmimalloc.so")]
    libs = [p for p in libs if p.is_file()]
    # the fully versioned name (libmimalloc.so.3.4) is the real file; the shorter names may be links to it
    return max(libs, key=lambda p: len(p.name), default=None)


def gpu_driver_installed() -> bool:
    """A CUDA or ROCm driver library on the loader's path: the machine may train on a GPU."""
    return any(ctypes.util.find_library(name) for name in ("cuda", "amdhip64"))


def preload_environment(
    environ: Mapping[str, str],
    library: Callable[[], Path | None] = mimalloc_library,
    gpu: Callable[[], bool] = gpu_driver_installed,
) -> dict[str, str] | None:
    """The environment to re-execute with, or None to stay on the allocator this process has."""
    choice = environ.get(ENV, "auto").strip().lower() or "auto"
    if choice not in CHOICES:
        raise AllocatorChoiceError(
            f"{ENV}={environ[ENV]!r} is not one of {', '.join(CHOICES)} (auto: mimalloc when training on a CPU)"
        )
    if choice == "system" or environ.get(PRELOADED):
        return None
    lib = library()
    if lib is None or str(lib) in environ.get("LD_PRELOAD", "").split(":"):
        return None
    if choice == "auto" and gpu():
        return None
    preload = ":".join(p for p in (str(lib), environ.get("LD_PRELOAD", "")) if p)
    # Never hand freed pages back to the OS: mimalloc's default (after 10 ms) re-faults them the next step
    # (3 interleaved rounds, w2v: 20.4 vs 16.1 audio-s/s); the resident size stayed flat, 0.2 GiB higher.
    purge = {"MIMALLOC_PURGE_DELAY": environ.get("MIMALLOC_PURGE_DELAY", "-1")}
    return {**environ, "LD_PRELOAD": preload, PRELOADED: str(lib), **purge}


def reexec_with_mimalloc() -> None:
    """Replace this process by the same command line with mimalloc preloaded (returns if nothing to do).

    `sys.orig_argv` is the interpreter's own command line (`python -m speeched.cli ...`, the console script,
    `accelerate launch`'s children), so the new process is the one that was started, with the same PID.
    """
    env = preload_environment(os.environ)
    if env is None:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)


def active_allocator() -> str:
    """`mimalloc` or `the system's malloc`, read from this process's own memory map (a failed preload is
    only a warning of the loader's)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        maps = ""
    return "mimalloc" if "libmimalloc" in maps else "the system's malloc"
