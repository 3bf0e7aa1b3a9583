"""The stable name of the labels reader (``ich.labels.parse_long_csv``) and the label names, for scripts written
against the earlier flat layout. The code lives in :mod:`ich.core.labels`, :mod:`ich.core.ids` and
:mod:`ich.data.labels_csv`."""

from ich.core.ids import AUGMENTED_ID_PATTERN, ID_PATTERN, is_valid_id, validate_id
from ich.core.labels import ANY, LABELS, RSNA_ROW_ORDER, SUBTYPES
from ich.data.labels_csv import LabelsCsvError, ParsedLabels, parse_long_csv

__all__ = [
    "ANY",
    "SUBTYPES",
    "LABELS",
    "RSNA_ROW_ORDER",
    "ID_PATTERN",
    "AUGMENTED_ID_PATTERN",
    "LabelsCsvError",
    "ParsedLabels",
    "is_valid_id",
    "validate_id",
    "parse_long_csv",
]
