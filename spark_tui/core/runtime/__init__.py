"""Running it: the launch sequence (`launch`: preflight, start, ready, verify against the plan), the process
supervisor (`supervisor`: the vLLM process group, its log, readiness, watchdog, stop), checkpoint downloads
(`download`), vLLM's log parser (`vllm_log`) and its diagnosis (`diagnose`).
"""
