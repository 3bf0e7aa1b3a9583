"""The six RSNA 2019 labels and their orders.

The RSNA ``stage_2_train.csv`` is "long": two columns ``ID,Label`` and six rows per image, whose ``ID`` is
``<image ID>_<label>`` (``ID_12cadc6af_epidural``); :mod:`ich.data.labels_csv` reads it. Everything downstream
works on a "wide" table with one row per image: column ``ID`` and one 0/1 column per label in :data:`LABELS` order.
"""

from __future__ import annotations

__all__ = ["ANY", "SUBTYPES", "LABELS", "RSNA_ROW_ORDER"]

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
