"""Deployment targets beyond the MLflow alias: Kubernetes (`local` is `api/serving.py`, fed by PostgreSQL)."""
