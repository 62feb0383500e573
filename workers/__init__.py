"""Composition roots: each builds the real adapters for one task queue and hands them down."""
