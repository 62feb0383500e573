"""Pure-ML layer: loading, splitting, preprocessing, training, metrics and serving.

Kept import-light on purpose: importing ``pmls.ml`` must not pull in polars, LightGBM or MLflow;
import the submodules you need (``pmls.ml.prepared``, ``pmls.ml.fitting``, ``pmls.ml.final`` ...).
"""
