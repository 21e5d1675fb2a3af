"""APwD: audio retrieval with a text difference modifier (the paper's Table 2).

``vocab`` (scenes, labels, modifier templates), ``jams_io`` (Scaper JAMS as JSON), ``dataset`` (reader),
``build`` (generator: ESC-50 + FSD50K, or the embedded corpus), ``text`` (text encoders), ``embeddings``
(frozen audio embeddings, cached), ``retrieval`` (the Fig. 3 system, R@K), ``evaluate`` (end to end),
``cli`` (``hear-diffbyola apwd build|eval|table``).
"""

from __future__ import annotations

from .vocab import APwDError

__all__ = ["APwDError"]
