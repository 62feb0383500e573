"""Thin activities: a contract in, pmls.ml / pmls.storage, a contract out."""
