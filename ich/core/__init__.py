"""The foundation every other layer builds on: params schema, label names and image IDs, files, errors, the
stage runner, quarantine reasons and the worker pool. Imports nothing else of :mod:`ich`."""
