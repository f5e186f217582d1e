"""Watching it: the /metrics scraper and statistics (`metrics`), the load generator (`bench`), `spark-tui tune`'s
search (`tune`) and the ablation (`ablate`).
"""
