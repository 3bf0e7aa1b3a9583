"""The six RSNA 2019 labels and their orders.

The RSNA ``stage_2_train.csv`` is "long": two columns ``ID,Label`` and six rows per image, whose ``ID`` is
``<image ID>_<label>`` (``ID_12cadc6af_epidural``); :mod:`ich.data.labels_csv` reads it. Everything downstream
works on a "wide" table with one row per image: column ``ID`` and one 0/1 column per label in :data:`LABELS` order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

__all__ = ["ANY", "SUBTYPES", "LABELS", "RSNA_ROW_ORDER", "LOG_LOSS_WEIGHTS", "LOG_LOSS_EPS", "label_matrix"]

ANY = "any"
SUBTYPES: tuple[str, ...] = (
    "epidural",
    "intraparenchymal",
    "intraventricular",
    "subarachnoid",
    "subdural",
)
#: Column order of every wide table, prediction file and metrics object: ``any`` first.
LABELS: tuple[str, ...] = (ANY, *SUBTYPES)
#: Order of the six rows per image in the RSNA CSV.
RSNA_ROW_ORDER: tuple[str, ...] = (*SUBTYPES, ANY)
#: RSNA 2019 competition weights of the weighted log loss: ``any`` counts twice, each subtype once (sum 7).
LOG_LOSS_WEIGHTS: dict[str, float] = {ANY: 2.0, **{subtype: 1.0 for subtype in SUBTYPES}}
#: Predictions are clipped to ``[eps, 1 - eps]`` before the log, as the RSNA 2019 Kaggle metric did
#: (scikit-learn's ``log_loss`` default at the time).
LOG_LOSS_EPS = 1e-15


def label_matrix(frame: pd.DataFrame, labels: Sequence[str] = LABELS) -> np.ndarray:
    """The 0/1 targets of a wide table as float32 ``(rows, len(labels))``."""
    return frame[list(labels)].to_numpy(dtype=np.float32)
