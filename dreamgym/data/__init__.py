"""Collecting real CarRacing-v3 rollouts into a resumable on-disk store.

- :mod:`dreamgym.episodes` (also importable as ``dreamgym.data.storage``): :class:`Episode`
  and :class:`EpisodeStore`, one ``.npz`` shard per episode plus a manifest, written
  crash-safely; every stage reads it, so it lives at the bottom of the package.
- :mod:`dreamgym.data.policies`: the policies that drive the car while collecting, by spec.
- :mod:`dreamgym.data.collect`: :func:`collect`, parallel and resumable.
"""

from dreamgym.data.collect import collect, run_episode
from dreamgym.data.policies import CorrelatedRandomPolicy, make_policy, register_policy
from dreamgym.episodes import CorruptShardWarning, Episode, EpisodeStore, ShardCorruptError

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
