"""The recipe registry: ``model.arch`` names a recipe, and the recipe knows the rest.

A recipe builds its networks, trains them through the shared :class:`ich.training.trainer.Trainer`, turns their
outputs into the six final probabilities, and says what ``models/model.json`` must record. The code that
runs recipes (the train and evaluate stages, inference) never asks which one it holds::

    recipe = get_recipe("cascade")
    networks = recipe.fit(trainer, model_params)          # train
    probabilities = recipe.predict(networks, images)      # (N, 6), LABELS order

Adding an architecture is one module in this package that calls :func:`register`, plus its import below.
"""

from __future__ import annotations

from ich.models.recipes import cascade, single  # noqa: F401,E402  (each module registers its recipes)
from ich.models.recipes.base import CamTarget, Recipe, RecipeError, get_recipe, recipe_names, register

__all__ = ["Recipe", "RecipeError", "CamTarget", "register", "get_recipe", "recipe_names"]
