"""The episode store, under the name it had first: see :mod:`dreamgym.episodes`.

Every stage reads episodes (training, metrics, the pictures), so the store lives at the
bottom of the package, in :mod:`dreamgym.episodes`; this module keeps
``from dreamgym.data.storage import EpisodeStore`` working.
"""

from dreamgym.episodes import (
    EPISODE_FORMAT_VERSION,
    FORMAT_VERSION,
    MANIFEST_NAME,
    PROVENANCE_KEYS,
    CorruptShardWarning,
    Episode,
    EpisodeStore,
    EpisodeSubset,
    ShardCorruptError,
    shard_name,
)

__all__ = [
    "EPISODE_FORMAT_VERSION",
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "PROVENANCE_KEYS",
    "CorruptShardWarning",
    "Episode",
    "EpisodeStore",
    "EpisodeSubset",
    "ShardCorruptError",
    "shard_name",
]
