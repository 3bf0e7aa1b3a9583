"""Intracranial-hemorrhage detection on head CT: the library behind the DVC stages in ``stages/``."""
