"""``python -m ich.predict DICOM_DIR --models models --out OUT``: the stable entry point of ``ich predict`` (the same
as the ``ich`` command's), and the names its modules in :mod:`ich.inference` implement (scan, render, predict,
outputs, cli), importable from here as before they were split."""

from ich.inference.cli import (
    build_parser,
    check_model_folder,
    load_model_folder,
    main,
    non_negative_int,
    positive_int,
    probability,
    run_predict,
)
from ich.inference.outputs import OUTPUT_FILES, series_table, submission_table, write_outputs
from ich.inference.predict import Prediction, plan_chunks, predict_files
from ich.inference.render import RenderedChunk, render_chunks
from ich.inference.scan import DicomFile, Scan, find_files, image_id_for, is_dicom_uid, read_file_header, scan_folder

__all__ = [
    "OUTPUT_FILES",
    "DicomFile",
    "Scan",
    "is_dicom_uid",
    "image_id_for",
    "find_files",
    "read_file_header",
    "scan_folder",
    "plan_chunks",
    "RenderedChunk",
    "render_chunks",
    "Prediction",
    "predict_files",
    "series_table",
    "submission_table",
    "write_outputs",
    "run_predict",
    "check_model_folder",
    "load_model_folder",
    "positive_int",
    "non_negative_int",
    "probability",
    "build_parser",
    "main",
]

if __name__ == "__main__":
    main()
