"""Build and load the fused CPU kernels (rag/models/fused_cpu.cpp) once per machine, in the background.

The kernels are compiled on first use with the machine's C++ compiler against the installed torch (~20 s on
2 cores), cached by a hash of the source, the flags and the torch version, and loaded as torch ops
(`torch.ops.rag_fused`). The build runs on a background thread, so a model load or a first question never
waits for it: until the kernels are there (or if they can't be built) the models run transformers' own ops,
which compute the same numbers more slowly. No lock files: a build writes a temporary file and renames it
into place, so two processes building at once both end with a complete library (the temporary files of killed
builds go at the next load or build). Each load touches its library, and a build deletes libraries nobody loaded
for UNUSED_DAYS (older torch versions, fresh virtualenvs of CI runs), so the folder does not grow by ~130 KB per
torch install forever.
"""
from __future__ import annotations

import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("fused_cpu.cpp")
NAMESPACE = "rag_fused"
# Instruction sets by torch's own CPU dispatch level: the library is built for what this CPU runs (the cache key
# includes them, so a cache folder shared by different CPUs never hands one another's build over).
ISA_FLAGS = {"AVX512": ["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mfma"],
             "AVX2": ["-mavx2", "-mfma"]}
# CPUs with AMX tiles (torch's check: the CPU has them and Linux lets processes use them) also get the tile
# attention for bfloat16 (fused_cpu.cpp, namespace amx), which rounds its outputs with AVX512-BF16 (every CPU with
# AMX has it).
AMX_FLAGS = ["-mamx-tile", "-mamx-bf16", "-mavx512bf16"]
# -ffast-math lets the compiler vectorise the sums of squares and exp (glibc's vector math): the results differ
# from torch's ops by float rounding only (tests/models/test_fused_layers.py states the tolerance).
CFLAGS = ["-O3", "-ffast-math", "-fopenmp", "-std=c++17", "-shared", "-fPIC", "-w"]
BUILD_TIMEOUT_S = 600
UNUSED_DAYS = 30  # a cached library not loaded for this long is deleted by the next build


@dataclass(frozen=True)
class KernelStatus:
    """Where the fused kernels stand in this process: `state` is absent (never asked for), building, ready or
    failed; `detail` says how they came (built in N s, or loaded from the cache) or why they can't be used."""
    state: str
    detail: str = ""


class Kernels:
    """One process's fused kernels: built or loaded once, on a background thread (the module keeps the one the
    models use; tests make their own to try a failing build)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._ops = None
        self.status = KernelStatus("absent")

    def start(self) -> None:
        """Start building/loading on a background thread (once per process)."""
        with self._lock:
            if self._thread is None:
                self.status = KernelStatus("building")
                self._thread = threading.Thread(target=self._build_and_load, name="rag-fused-kernels", daemon=True)
                self._thread.start()

    def ops(self):
        """`torch.ops.rag_fused` when loaded, else None (not asked for yet, still building, or failed)."""
        return self._ops

    def wait(self, timeout: float | None = None) -> KernelStatus:
        self.start()
        self._done.wait(timeout)
        return self.status

    def _build_and_load(self) -> None:
        started = time.perf_counter()
        try:
            import torch

            library, built = _library(torch)
            torch.ops.load_library(str(library))
            self._ops = getattr(torch.ops, NAMESPACE)
            how = f"built in {time.perf_counter() - started:.1f} s" if built else "loaded from the cache"
            self.status = KernelStatus("ready", f"{how}: {library}")
            log.info("fused CPU kernels %s", self.status.detail)
        except Exception as exc:  # noqa: BLE001 - any failure leaves the models on transformers' ops
            self.status = KernelStatus("failed", str(exc))
            log.warning("fused CPU kernels unavailable (%s); the models run transformers' own ops instead, which "
                        "give the same results ~10%% slower on CPU. Install a C++ compiler (apt-get install g++) "
                        "to get them, or set RAG_FUSED_KERNELS=0 to stop trying.", exc)
        finally:
            self._done.set()


def cache_dir() -> Path:
    """$XDG_CACHE_HOME/rag/kernels (~/.cache/rag/kernels by default)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rag" / "kernels"


def build_command(torch, output: Path, defines: Sequence[str] = ()) -> list[str]:
    """The compiler call: torch's headers and libraries straight from its folder (what torch.utils.cpp_extension
    would use, without needing setuptools or ninja), `CXX` or c++ as the compiler. `defines` (NAME=VALUE) are
    for tests, e.g. RAG_FUSED_LANES=16 to run the AVX-512 build's block layout on any CPU."""
    compiler = os.environ.get("CXX", "c++")
    isa = isa_flags(torch)
    abi = f"-D_GLIBCXX_USE_CXX11_ABI={int(torch._C._GLIBCXX_USE_CXX11_ABI)}"
    root = Path(torch.__file__).parent
    includes = [f"-I{root / 'include'}", f"-I{root / 'include' / 'torch' / 'csrc' / 'api' / 'include'}"]
    return [compiler, *CFLAGS, *isa, abi, *(f"-D{d}" for d in defines), *includes, str(SOURCE), "-o", str(output),
            f"-L{root / 'lib'}", "-lc10", "-ltorch_cpu"]


def isa_flags(torch) -> list[str]:
    """The instruction-set flags of this CPU's build: torch's dispatch level, plus AMX on an AVX-512 CPU that has
    the tiles (torch's private check; absent from a torch means no AMX build)."""
    capability = torch.backends.cpu.get_cpu_capability()
    amx = getattr(torch.cpu, "_is_amx_tile_supported", None)
    return ISA_FLAGS.get(capability, []) + (AMX_FLAGS if capability == "AVX512" and amx and amx() else [])


def _library(torch) -> tuple[Path, bool]:
    """The compiled library for this source, flags, torch and CPU, built if the cache lacks it; and whether it
    was built now."""
    probe = build_command(torch, Path("out.so"))
    key = hashlib.sha256("\0".join([SOURCE.read_text(), torch.__version__, sys.version, *probe]).encode())
    folder = cache_dir()
    library = folder / f"{NAMESPACE}-{key.hexdigest()[:16]}.so"
    if library.is_file():
        try:
            os.utime(library)  # its age now says when it was last used (see _remove_unused_libraries)
            _remove_stale_partials(folder)  # app processes stopped mid-build leave them; no build may come again
            return library, False
        except FileNotFoundError:  # deleted as unused by another process just now: build it again
            pass
        except OSError:  # a read-only cache: use it as it is
            return library, False
    folder.mkdir(parents=True, exist_ok=True)
    _remove_stale_partials(folder)
    _remove_unused_libraries(folder)
    handle, partial = tempfile.mkstemp(prefix=library.stem, suffix=".so.partial", dir=folder)
    os.close(handle)
    try:
        result = subprocess.run(build_command(torch, Path(partial)), capture_output=True, text=True,
                                timeout=BUILD_TIMEOUT_S)
        if result.returncode != 0:
            raise RuntimeError(f"the C++ build failed: {(result.stderr or result.stdout).strip()[-800:]}")
        os.replace(partial, library)  # complete or absent: a build cut short is never loaded
    finally:
        if os.path.exists(partial):
            os.remove(partial)
    return library, True


def _remove_stale_partials(folder: Path) -> None:
    """Delete what builds of killed processes left (a process that stops mid-build can't clean up). A build
    still running has touched its file within BUILD_TIMEOUT_S, so only older ones go."""
    cutoff = time.time() - BUILD_TIMEOUT_S
    for partial in folder.glob(f"{NAMESPACE}-*.so.partial"):
        try:
            if partial.stat().st_mtime < cutoff:
                partial.unlink()
        except OSError:  # another process removed or renamed it meanwhile
            pass


def _remove_unused_libraries(folder: Path) -> None:
    """Delete the libraries no process loaded for UNUSED_DAYS (each load touches its file). A process that has
    one loaded keeps its mapping (Linux unlinks, it does not unmap), and one that finds it gone builds it again."""
    cutoff = time.time() - UNUSED_DAYS * 86400
    for library in folder.glob(f"{NAMESPACE}-*.so"):
        try:
            if library.stat().st_mtime < cutoff:
                library.unlink()
                log.info("removed the fused kernels library %s, unused for %d days", library.name, UNUSED_DAYS)
        except OSError:  # another process removed it meanwhile
            pass


_KERNELS = Kernels()


def start() -> None:
    """Begin building/loading the fused kernels in the background; calling it again does nothing."""
    _KERNELS.start()


def ops():
    """The loaded kernels (`torch.ops.rag_fused`), or None while they are not (yet) usable."""
    return _KERNELS.ops()


def wait(timeout: float | None = None) -> KernelStatus:
    """Start if needed and wait up to `timeout` seconds for the build; returns the status then."""
    return _KERNELS.wait(timeout)


def status() -> KernelStatus:
    return _KERNELS.status
