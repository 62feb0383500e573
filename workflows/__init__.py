"""Deterministic orchestration only: no numpy, no files, no network (see PITFALLS.md, Temporal)."""
