"""Error hierarchy and exit codes. Exit codes are an API: see README "Exit codes"."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    OK = 0
    FAILURE = 1  # a check or run failed (e.g. `plan --check` found invalid flags)
    USAGE = 2  # bad command line or bad input value
    NO_GPU = 3  # `probe`: no NVIDIA driver / NVML library / GPU on this machine
    PROFILE = 4  # a profile file (shipped or user override) is invalid
    PLAN = 5  # no plan fits (unsupported GPU, does not fit in memory)
    VLLM = 6  # vLLM missing, failed to start or died
    DOWNLOAD = 7  # download / checkpoint problem (disk, token, incomplete files)
    INTERRUPTED = 130


class SparkError(Exception):
    """A user-facing error: a message naming the problem and a hint naming the fix."""

    exit_code: ExitCode = ExitCode.FAILURE

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message


class UsageError(SparkError):
    exit_code = ExitCode.USAGE


class NoGpuError(SparkError):
    exit_code = ExitCode.NO_GPU


class ProfileError(SparkError):
    exit_code = ExitCode.PROFILE


class PlanError(SparkError):
    exit_code = ExitCode.PLAN


class VllmError(SparkError):
    exit_code = ExitCode.VLLM


class DownloadError(SparkError):
    exit_code = ExitCode.DOWNLOAD
