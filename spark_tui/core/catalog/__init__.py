"""What is known: the shipped and user profiles (`profiles`), published performance figures and their sources,
vLLM's defaults and flag compatibility per release, the MoE kernel vLLM picks (`kernel_paths`), checkpoint
verification (`checkpoint`) and the evidence class of each flag (`evidence`).
"""
