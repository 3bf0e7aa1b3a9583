"""How a cascade's two stages give the final six probabilities (``model.combination``)."""

from __future__ import annotations

import numpy as np

from ich.core.labels import SUBTYPES

__all__ = ["COMBINATIONS", "combine_cascade"]

COMBINATIONS: tuple[str, ...] = ("product", "gate")


def combine_cascade(
    p_any: np.ndarray, p_subtype_given_bleed: np.ndarray, method: str = "product", gate_threshold: float = 0.5
) -> np.ndarray:
    """Final six probabilities ``(N, 6)`` (``any`` first) from the cascade's two stages.

    - ``product``: ``P(subtype) = P(any) * P(subtype | hemorrhage)``, the law of total probability
      (a subtype implies a hemorrhage).
    - ``gate``: stage 2 speaks only where stage 1 is confident: ``P(subtype | hemorrhage)`` where
      ``P(any) >= gate_threshold``, else the product (which stays small).

    Args:
        p_any: ``(N,)`` or ``(N, 1)`` stage-1 probabilities.
        p_subtype_given_bleed: ``(N, 5)`` stage-2 probabilities in :data:`SUBTYPES` order.
    """
    p_any = np.asarray(p_any, dtype=np.float64).reshape(-1, 1)
    conditional = np.asarray(p_subtype_given_bleed, dtype=np.float64)
    if conditional.shape != (len(p_any), len(SUBTYPES)):
        raise ValueError(
            f"Expected stage-2 probabilities of shape ({len(p_any)}, {len(SUBTYPES)}). Received: {conditional.shape}"
        )
    if method == "product":
        subtypes = p_any * conditional
    elif method == "gate":
        subtypes = np.where(p_any >= gate_threshold, conditional, p_any * conditional)
    else:
        raise ValueError(f"`model.combination` must be one of {', '.join(COMBINATIONS)}. Received: {method!r}")
    return np.concatenate([p_any, subtypes], axis=1)
