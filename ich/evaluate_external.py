"""``python -m ich.evaluate_external``: the stable entry point of :mod:`ich.inference.external` (the same as
``ich evaluate-external``)."""

from ich.inference.external import *  # noqa: F403  (the public names of the implementation)
from ich.inference.external import __all__, main  # noqa: F401

if __name__ == "__main__":
    main()
