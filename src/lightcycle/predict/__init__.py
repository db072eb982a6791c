"""Predict with a trained checkpoint (`lightcycle-predict`, `lightcycle.Predictor`).

`inputs` decides which images (a file, a folder, a CSV of names) and vets them; `predictor` runs
the model (batched, with TTA and snapshot ensembles); the task's file in `per_task/` says what each
answer is and how it is written; `writers` writes the CSV / JSON and any side files (segmentation masks).
"""

from lightcycle.outputs import check_writable
from lightcycle.predict.inputs import NAME_COLUMNS, Inputs, list_inputs, vet_inputs
from lightcycle.predict.predictor import (
    DEVICES,
    PredictDataset,
    Prediction,
    Predictor,
    as_image,
    resolve_device,
)
from lightcycle.predict.writers import (
    OUTPUT_FORMATS,
    SideFiles,
    save_mask,
    write_predictions,
)

__all__ = [
    "DEVICES",
    "Inputs",
    "NAME_COLUMNS",
    "OUTPUT_FORMATS",
    "PredictDataset",
    "Prediction",
    "Predictor",
    "SideFiles",
    "as_image",
    "check_writable",
    "list_inputs",
    "resolve_device",
    "save_mask",
    "vet_inputs",
    "write_predictions",
]
