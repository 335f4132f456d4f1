"""The episode store, under the name it had first: see :mod:`dreamgym.episodes`.

Every stage reads episodes (training, metrics, the pictures), so the store lives at the
bottom of the package, in :mod:`dreamgym.episodes`; this module keeps
``from dreamgym.data.storage import EpisodeStore`` working.
"""

from dreamgym import episodes
from dreamgym.episodes import *  # noqa: F403

__all__ = list(episodes.__all__)
