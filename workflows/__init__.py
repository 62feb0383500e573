"""Deterministic orchestration only: no numpy, no files, no network; names and activity references come
from ``pmls.contracts``, and time and randomness from ``workflow.now()`` / ``workflow.random()``."""
