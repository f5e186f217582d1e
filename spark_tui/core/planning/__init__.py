"""What to run: the plan request (`request`: --set items, bind address, ranges), the planner (`planner`), the
`Plan` and its flags (`plan`, `flags`, `flagtypes`, `sizes`), the memory and MTP speed models, multi-node advice
(`cluster`) and values measured by `spark-tui tune` (`tuned`).
"""
