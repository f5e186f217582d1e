"""Running it: the process supervisor (`supervisor`: preflight checks, start, ready, verify against the plan, stop),
checkpoint downloads (`download`), vLLM's log parser (`vllm_log`) and its diagnosis (`diagnose`).
"""
