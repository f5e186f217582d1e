"""The pure domain of spark-tui (no textual, torch or vllm imports), one sub-package per concern.

    hardware   what is here: the NVML probe, live GPU state, GPU grouping, unified memory, the memory guard
    catalog    what is known: device/checkpoint/model profiles, published figures, sources, vLLM's defaults,
               compatibility and kernel choice per release, checkpoint verification, flag evidence
    planning   what to run: the request, the planner, the Plan and its flags, memory and MTP models, tuned values
    runtime    running it: the launch sequence, the vLLM supervisor, downloads, the log parser and diagnosis
    observe    watching it: /metrics, the benchmark, tune and ablate
    export     the plan as files (bash, docker, compose, systemd, k8s, ray) and the one safe file writer
    paths      the per-user directories (SPARK_TUI_HOME)
"""
