"""Test support: a real CPU vLLM (venv builder, tiny generated models, server start/stop).

Used by tests/conftest.py fixtures and by bench/ scripts. Nothing here imports vllm, torch or
transformers into the test process: those live in the separate vLLM venv and run in subprocesses.
"""
