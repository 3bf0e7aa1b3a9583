"""Using a trained model folder: loading, features, prediction on new DICOM folders, Grad-CAM and external
evaluation. Never imports :mod:`ich.training`."""
