"""Synthetic galaxies for the classifier: the survey-like generator (default) and the simple one.

``synthetic_galaxies(start, stop, seed, ...)`` returns galaxies ``start .. stop-1`` as the
galaxies dataset's fields:

* ``generator="survey"`` (``synthetic.generator``, the default): a continuum of morphologies
  (``population``) drawn as SDSS cut-outs scaled to each galaxy's Petrosian R90, with seeing,
  noise, colour and JPEG compression (``survey``); simulated volunteers give every galaxy vote
  fractions for round / edge-on / spiral (``volunteers``), and the Galaxy Zoo rule labels it:
  class c when its fraction reaches τ (``threshold``), else -1 (no class kept);
* ``generator="simple"``: the first generator (``simple_galaxies``): a third of each class,
  all kept, one-hot votes. Kept to compare against.

Galaxy ``i`` of seed ``s`` depends on ``(s, i)`` only: galaxies are drawn in blocks of ``BLOCK``
whose random numbers come from ``default_rng([s, block])`` (parameters), ``[s, block, 1]``
(votes) and ``[s, block, 2, chunk]`` (sky noise). Any range can therefore be rendered on its
own (one per MPI rank) and the result is the same whatever the split; the first ``k``
galaxies of ``n > k`` equal those of ``k``.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from cosmotrain.data import galaxy_zoo, population, simple_galaxies, survey, volunteers

CLASS_NAMES = ("round", "edge-on", "spiral")
GENERATORS = ("survey", "simple")
BLOCK = 240  # galaxies drawn from one random stream; a multiple of 3 (the simple generator's classes)


def survey_block(seed: int, block: int, size: int, threshold: float, quality: int, lo: int = 0,
                 hi: int = BLOCK) -> dict[str, np.ndarray]:
    """Galaxies ``lo:hi`` of block ``block``: ``images`` uint8 [n,S,S,3], ``labels`` int8, ``vote_fractions``.

    Labels are 0 round, 1 edge-on, 2 spiral where that class's vote fraction is ≥ ``threshold``,
    -1 where no class reaches it.
    """
    params = population.draw(np.random.default_rng([seed, block]), BLOCK)
    votes = volunteers.vote_fractions(params, np.random.default_rng([seed, block, 1]))
    images = survey.render(params, size, [seed, block, 2], quality, lo, hi)
    return {"images": images, "labels": galaxy_zoo.assign_labels(votes[lo:hi], threshold),
            "vote_fractions": votes[lo:hi].astype(np.float32)}


def synthetic_galaxies(start: int, stop: int, seed: int, size: int = 64, progress: Callable | None = None,
                       generator: str = "survey", threshold: float = 0.9, quality: int = 75) -> dict[str, np.ndarray]:
    """Synthetic galaxies ``start .. stop-1`` of ``seed`` as the galaxies dataset's fields.

    Returns ``images`` uint8 [N,S,S,3], ``labels`` int8 [N] (0 round, 1 edge-on, 2 spiral, -1
    no class reaches ``threshold``), ``vote_fractions`` float32 [N,3] and ``ids`` int64 [N]
    (``start .. stop-1``). ``quality`` is the JPEG quality of the survey generator.
    ``progress``, if given, is called with the number of galaxies finished after each block.
    """
    if generator not in GENERATORS:
        raise ValueError(f"unknown generator {generator!r}; known: {', '.join(GENERATORS)}")
    parts = []
    for block in range(start // BLOCK, -(-stop // BLOCK) if stop > start else start // BLOCK):
        lo, hi = max(start, block * BLOCK) - block * BLOCK, min(stop, (block + 1) * BLOCK) - block * BLOCK
        if generator == "survey":
            parts.append(survey_block(seed, block, size, threshold, quality, lo, hi))
        else:
            fields = simple_galaxies.render_block(seed, block, block * BLOCK, BLOCK, size)
            parts.append({k: v[lo:hi] for k, v in fields.items()})
        if progress is not None:
            progress(hi - lo)
    empty = {"images": np.zeros((0, size, size, 3), np.uint8), "labels": np.zeros(0, np.int8),
             "vote_fractions": np.zeros((0, 3), np.float32)}
    fields = {k: np.concatenate([p[k] for p in parts]) if parts else v for k, v in empty.items()}
    return {**fields, "ids": np.arange(start, stop, dtype=np.int64)}
