"""kernels_check: does this machine's stack run NVFP4 natively, which MoE backends work, how fast.

It runs kernels (BF16 / FP8 / NVFP4 GEMMs, vLLM's NVFP4 and Marlin ops, a fused MoE, the FP8 KV-cache
write) and compares each with a float64 reference. torch and vLLM are imported lazily, inside the checks.

API (used by `spark-tui selftest` and the TUI's self-test screen):
    plan_selftest(options) -> list[PlannedCheck]   what will run here, without running it
    run_selftest(options, on_result=cb) -> Report  run everything (blocks: call it from a worker thread)
    render_text / render_markdown / render_json    the three report formats
"""

from kernels_check.model import CheckResult, Recommendation, Report, SelftestExit, Status, Verdict

__all__ = [
    "CheckResult", "Options", "PlannedCheck", "Recommendation", "Report", "SelftestExit", "Status", "Verdict",
    "plan_selftest", "render_json", "render_markdown", "render_text", "run_selftest", "main",
]


def __getattr__(name: str):  # keep `import kernels_check` cheap: runner/render load on first use
    if name in ("run_selftest", "plan_selftest", "PlannedCheck"):
        from kernels_check import runner

        return getattr(runner, name)
    if name == "Options":
        from kernels_check.checks import Options

        return Options
    if name in ("render_text", "render_markdown", "render_json"):
        from kernels_check import render

        return getattr(render, name)
    if name == "main":
        from kernels_check.cli import main

        return main
    raise AttributeError(name)
