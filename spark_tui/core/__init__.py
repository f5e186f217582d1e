"""Pure domain logic. Nothing here imports textual, torch or vllm at module level."""
