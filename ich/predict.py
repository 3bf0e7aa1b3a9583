"""``python -m ich.predict DICOM_DIR --models models --out OUT``: the stable entry point of :mod:`ich.inference.predict`
(the same as ``ich predict``)."""

from ich.inference.predict import *  # noqa: F403  (the public names of the implementation)
from ich.inference.predict import __all__, main  # noqa: F401

if __name__ == "__main__":
    main()
