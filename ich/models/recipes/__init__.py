"""The recipe registry: ``model.arch`` names a recipe, and the recipe knows the rest.

A recipe builds its networks, trains them through the trainer the train stage hands it, turns their outputs into
the six final probabilities, and says what ``models/model.json`` must record. The code that runs recipes (the
train and evaluate stages, inference) never asks which one it holds::

    recipe = get_recipe("cascade")
    networks = recipe.fit(trainer, model_params)          # train
    probabilities = recipe.predict(networks, images)      # (N, 6), LABELS order

Listing the names (:func:`recipe_names`) imports nothing: :data:`RECIPE_MODULES` says which module registers each,
and :func:`get_recipe` imports only that one (TensorFlow with it). Adding an architecture is one module in this
package that calls :func:`ich.models.recipes.base.register`, plus its line in :data:`RECIPE_MODULES`.
"""

from __future__ import annotations

import importlib
import sys
from typing import TYPE_CHECKING, Any

from ich.core.errors import PipelineError

if TYPE_CHECKING:
    from ich.models.recipes.base import Recipe

__all__ = ["RECIPE_MODULES", "RecipeError", "recipe_names", "get_recipe", "Recipe", "CamTarget", "register"]

#: ``model.arch`` -> the module that registers that recipe.
RECIPE_MODULES: dict[str, str] = {
    "cascade": "ich.models.recipes.cascade",
    "cascade_warmstart": "ich.models.recipes.cascade",
    "efficientnetv2": "ich.models.recipes.single",
    "convnext": "ich.models.recipes.single",
}


class RecipeError(PipelineError, ValueError):
    """A recipe cannot be built or trained as asked (unknown name, unusable data); the message says why."""


def recipe_names() -> list[str]:
    """Every known ``model.arch``: the built-in ones, then any registered at run time. Imports no TensorFlow."""
    names = list(RECIPE_MODULES)
    base = sys.modules.get("ich.models.recipes.base")
    if base is not None:
        names += [name for name in base.registered_names() if name not in RECIPE_MODULES]
    return names


def get_recipe(name: str) -> Recipe:
    """The recipe registered as ``name`` (its module imported on first use).

    Raises:
        RecipeError: listing every known name when ``name`` is not one of them.
    """
    if name in RECIPE_MODULES:
        importlib.import_module(RECIPE_MODULES[name])
    elif "ich.models.recipes.base" not in sys.modules:
        raise RecipeError(f"`model.arch` must be one of {', '.join(recipe_names())}. Received: {name!r}")
    from ich.models.recipes.base import registered

    recipe = registered(name)
    if recipe is None:
        raise RecipeError(f"`model.arch` must be one of {', '.join(recipe_names())}. Received: {name!r}")
    return recipe


def __getattr__(attribute: str) -> Any:
    """``Recipe``, ``CamTarget`` and ``register`` from :mod:`ich.models.recipes.base`, imported when first used."""
    if attribute in ("Recipe", "CamTarget", "register"):
        return getattr(importlib.import_module("ich.models.recipes.base"), attribute)
    raise AttributeError(f"module {__name__!r} has no attribute {attribute!r}")
