"""Collecting real CarRacing-v3 rollouts into a resumable on-disk store.

- :mod:`dreamgym.data.storage`: :class:`Episode` and :class:`EpisodeStore`, one ``.npz``
  shard per episode plus a manifest, written crash-safely.
- :mod:`dreamgym.data.policies`: the policies that drive the car while collecting.
- :mod:`dreamgym.data.collect`: :func:`collect`, parallel and resumable.
"""

from dreamgym.data.collect import collect, run_episode
from dreamgym.data.policies import CorrelatedRandomPolicy, make_policy, register_policy
from dreamgym.data.storage import (
    CorruptShardWarning,
    Episode,
    EpisodeStore,
    ShardCorruptError,
)

__all__ = [
    "CorrelatedRandomPolicy",
    "CorruptShardWarning",
    "Episode",
    "EpisodeStore",
    "ShardCorruptError",
    "collect",
    "make_policy",
    "register_policy",
    "run_episode",
]
