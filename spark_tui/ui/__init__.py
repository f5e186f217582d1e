"""The Textual layer: one App, one Screen per step. No domain logic here: it calls spark_tui.core."""
