"""The registered pyfunc, as MLflow "models from code": `log_model` copies this file into the model and
runs it on load, so nothing is pickled (the model's code is the installed `transfertraj` package).
What it takes and answers (raw points, TP's asked times, per-task checkpoints): transfertraj.serving.
"""

import mlflow.models

from transfertraj.serving import TransferTrajModel

mlflow.models.set_model(TransferTrajModel())
