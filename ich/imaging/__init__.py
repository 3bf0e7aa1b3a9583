"""CT images: reading DICOM headers and slices (pydicom underneath), HU windows, rendering to RGB and PNG I/O."""
