"""Every chart of the reports, as Vega-Lite specs built from data, and their rendering to PNG.

The spec builders are pure: arrays or tables in, a Vega-Lite spec (a plain ``dict``) out, with the data
inlined and :data:`BASE_CONFIG` as its config, so a spec renders the same anywhere. :func:`render_png` draws
a spec with vl-convert (no browser, no network).
"""

from ich.reports.charts.base import BASE_CONFIG, LABEL_COLORS, png_size, render_png
from ich.reports.charts.calibration import CALIBRATION_STRATEGIES, calibration_bins, calibration_edges, calibration_spec
from ich.reports.charts.curves import precision_recall_spec, roc_spec
from ich.reports.charts.series import probability_chart_spec
from ich.reports.charts.training import SPLIT_NAMES, read_training_curves, training_spec, training_specs

__all__ = [
    "BASE_CONFIG",
    "LABEL_COLORS",
    "png_size",
    "render_png",
    "SPLIT_NAMES",
    "read_training_curves",
    "training_spec",
    "training_specs",
    "roc_spec",
    "precision_recall_spec",
    "CALIBRATION_STRATEGIES",
    "calibration_edges",
    "calibration_bins",
    "calibration_spec",
    "probability_chart_spec",
]
