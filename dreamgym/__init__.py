"""dreamgym: learned world models of Gymnasium envs, as Gymnasium envs.

Importing the package registers ``dreamgym/DreamCarRacing-v0`` and
``dreamgym/RealCarRacing-v0``; ``gym.make("dreamgym:dreamgym/DreamCarRacing-v0")`` imports it
for you.
"""

from gymnasium.envs.registration import register, registry

from typing import Any

from dreamgym.config import FORMAT_VERSION, ConfigError, WorldModelConfig

from dreamgym.version import __version__

# torch-backed names load on first use, so that `import dreamgym` (done by every collection
# worker and by gym.make's "dreamgym:" prefix) stays cheap.
_LAZY = {
    "WorldModel": "dreamgym.models.world_model",
    "WorldModelFormatError": "dreamgym.models.world_model",
    "load_world_model": "dreamgym.hub",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dreamgym' has no attribute {name!r}")


# As CartPole: gym.make truncates through TimeLimit(max_episode_steps), and make_vec hands the
# same horizon to the batched vector env, which truncates itself.
_ENVS = {
    "dreamgym/DreamCarRacing-v0": "dreamgym.envs.dream:DreamCarRacingEnv",
    "dreamgym/RealCarRacing-v0": "dreamgym.envs.real:RealCarRacingEnv",
}
_VECTOR_ENVS = {"dreamgym/DreamCarRacing-v0": "dreamgym.envs.dream_vector:DreamCarRacingVectorEnv"}
for _env_id, _entry_point in _ENVS.items():
    if _env_id not in registry:
        register(
            id=_env_id,
            entry_point=_entry_point,
            max_episode_steps=1000,
            reward_threshold=900,
            vector_entry_point=_VECTOR_ENVS.get(_env_id),
        )

__all__ = [
    "FORMAT_VERSION",
    "ConfigError",
    "WorldModel",
    "WorldModelConfig",
    "WorldModelFormatError",
    "__version__",
    "load_world_model",
]
