"""Helpers shared by score plugins (upstream ``plugins/helper``)."""

from __future__ import annotations

from kubling.scheduler.interface import MAX_NODE_SCORE


def default_normalize_score(scores: list[int], *, reverse: bool) -> None:
    """Scale so the highest becomes ``MAX_NODE_SCORE`` (reversed: the lowest does).

    Upstream ``DefaultNormalizeScore``, including its all-zero case: reversed, every node
    gets the maximum; otherwise every node keeps zero.
    """
    highest = max(scores, default=0)
    if highest == 0:
        if reverse:
            scores[:] = [MAX_NODE_SCORE] * len(scores)
        return
    for i, score in enumerate(scores):
        scaled = MAX_NODE_SCORE * score // highest
        scores[i] = MAX_NODE_SCORE - scaled if reverse else scaled
