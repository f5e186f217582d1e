"""The one NVML wrapper (pattern of nvitop's `nvitop/api/libnvml.py`).

- `pynvml` (package nvidia-ml-py) is imported lazily, and NVML is initialised lazily on the first query.
- Every NVML call goes through `query(fn, *args, default=NA)`. A per-field failure (NVML_ERROR_NOT_SUPPORTED,
  a function the installed driver lacks, any other per-field NVMLError) returns `default`; with the default
  `NA` it returns a typed `NotAvailable` value that records why (falsy, never 0). The snapshot turns it
  into `None` with `value_or_none()`.
- A missing pynvml / libnvidia-ml / driver becomes one `NvmlUnavailable` error (a `NoGpuError`, exit 3)
  carrying a probe status (`no_nvml`, `no_driver`, `error`), a message and an install hint.

Nothing here imports textual, torch or vllm.
"""

from __future__ import annotations

import importlib
import logging
import threading
from typing import Any, Callable

from spark_tui.errors import NoGpuError

log = logging.getLogger(__name__)

INSTALL_HINT_DRIVER = (
    "install the NVIDIA driver (it ships libnvidia-ml.so.1), e.g. `sudo apt install nvidia-driver-580-open` "
    "on Ubuntu, then check with `nvidia-smi`; in a container, run it with `--gpus all`"
)
INSTALL_HINT_PYNVML = "install the NVML bindings: `pip install nvidia-ml-py`"


class NotAvailable:
    """A value NVML could not give. Falsy; `reason` is 'not_supported', 'no_function', 'library_not_found' or
    'error: ...'."""

    __slots__ = ("reason",)

    def __init__(self, reason: str = "n/a") -> None:
        self.reason = reason

    def __bool__(self) -> bool:
        return False

    def __repr__(self) -> str:
        return f"NotAvailable({self.reason!r})"

    def __str__(self) -> str:
        return "N/A"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, NotAvailable)

    def __hash__(self) -> int:
        return hash(NotAvailable)


NA = NotAvailable()
"""The default of `query`: ask for a `NotAvailable` that records the reason."""


def is_na(value: Any) -> bool:
    return isinstance(value, NotAvailable)


def value_or_none(value: Any) -> Any:
    return None if isinstance(value, NotAvailable) else value


class NvmlUnavailable(NoGpuError):
    """NVML cannot be used on this machine at all (no bindings, no library, no driver)."""

    def __init__(self, status: str, message: str, hint: str) -> None:
        super().__init__(message, hint)
        self.status = status


_lock = threading.RLock()
_initialized = False
_lib: Any = None


def _reset() -> None:
    """Forget the loaded module and init state (tests swap `pynvml` for a recorded-output replay)."""
    global _initialized, _lib
    with _lock:
        _initialized = False
        _lib = None


def lib() -> Any:
    """The pynvml module, imported on first use."""
    global _lib
    with _lock:
        if _lib is None:
            try:
                _lib = importlib.import_module("pynvml")
            except ImportError as e:
                raise NvmlUnavailable(
                    "no_nvml", f"the NVML Python bindings are not installed ({e})", INSTALL_HINT_PYNVML
                ) from None
        return _lib


def _error_code(err: BaseException) -> int | None:
    return getattr(err, "value", None)


def init() -> None:
    """Initialise NVML once. Raises NvmlUnavailable with the probe status on failure."""
    global _initialized
    with _lock:
        if _initialized:
            return
        m = lib()
        try:
            m.nvmlInit()
        except m.NVMLError as e:
            code = _error_code(e)
            if code == m.NVML_ERROR_LIBRARY_NOT_FOUND:
                raise NvmlUnavailable(
                    "no_nvml",
                    "the NVIDIA management library (libnvidia-ml.so.1) was not found: no NVIDIA driver is installed",
                    INSTALL_HINT_DRIVER,
                ) from None
            if code == m.NVML_ERROR_DRIVER_NOT_LOADED:
                raise NvmlUnavailable(
                    "no_driver",
                    "libnvidia-ml.so.1 is present but the NVIDIA kernel driver is not loaded",
                    "load it (`sudo modprobe nvidia`) or reboot after installing the driver; check with `nvidia-smi`",
                ) from None
            if code == m.NVML_ERROR_NO_PERMISSION:
                raise NvmlUnavailable(
                    "no_driver",
                    "no permission to open the NVIDIA devices (/dev/nvidia*)",
                    "run as a user in the video/render group, or give the container the GPUs (`--gpus all`)",
                ) from None
            raise NvmlUnavailable(
                "error", f"NVML failed to initialise: {e}", "check the driver with `nvidia-smi`"
            ) from None
        _initialized = True


def shutdown() -> None:
    global _initialized
    with _lock:
        if _initialized and _lib is not None:
            try:
                _lib.nvmlShutdown()
            except _lib.NVMLError:  # pragma: no cover - shutdown failures are harmless
                pass
        _initialized = False


def query(fn: str | Callable[..., Any], *args: Any, default: Any = NA) -> Any:
    """Call one NVML function (a pynvml name or a callable), initialising NVML first.

    Per-field errors give `default` (with `NA`: a `NotAvailable` saying why). bytes results are decoded.
    """
    init()
    m = lib()
    func = getattr(m, fn, None) if isinstance(fn, str) else fn
    if func is None:  # this pynvml has no such function
        return NotAvailable("no_function") if default is NA else default
    try:
        value = func(*args)
    except m.NVMLError as e:
        code = _error_code(e)
        if code == m.NVML_ERROR_NOT_SUPPORTED:
            reason = "not_supported"
        elif code == getattr(m, "NVML_ERROR_FUNCTION_NOT_FOUND", None):
            reason = "no_function"
        elif code == getattr(m, "NVML_ERROR_LIBRARY_NOT_FOUND", None):
            reason = "library_not_found"  # e.g. nvmlSystemGetCudaDriverVersion_v2 without libcuda.so.1
        else:
            reason = f"error: {e}"
            log.debug("NVML %s%r failed: %s", getattr(func, "__name__", fn), args, e)
        return NotAvailable(reason) if default is NA else default
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return value


def device_count() -> int:
    n = query("nvmlDeviceGetCount")
    if is_na(n):
        raise NvmlUnavailable("error", f"NVML could not count the GPUs ({n.reason})", "check `nvidia-smi`")
    return int(n)


def cuda_version_string(v: int) -> str:
    """nvmlSystemGetCudaDriverVersion's integer (13000) as "13.0"; 12080 -> "12.8"."""
    return f"{v // 1000}.{(v % 1000) // 10}"
