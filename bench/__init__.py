"""Benchmarks: figures printed side by side with an alternative; not tests, they assert nothing."""
