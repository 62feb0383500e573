"""The registered model's code (MLflow models-from-code): MLflow runs this file to build the model when a
consumer loads it, so nothing is pickled into the registry. Loading still runs this code (and the pmls copy
logged beside it): for consumers who trust the registry. The service itself never loads it this way
(``ModelRegistry.load_checked``)."""

import mlflow

from pmls.storage.pyfunc import PmlsPyfuncModel

mlflow.models.set_model(PmlsPyfuncModel())
