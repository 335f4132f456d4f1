"""dreamgym: learned world models of Gymnasium envs, as Gymnasium envs.

Importing the package registers ``dreamgym/DreamCarRacing-v0`` (and ``-v1``, the same env
in the world model of the paper's loop) and ``dreamgym/RealCarRacing-v0``;
``gym.make("dreamgym:dreamgym/DreamCarRacing-v0")`` imports it for you. It also registers the
collection policies driven by an agent (``controller:`` and ``agent:``), which
:mod:`dreamgym.data` cannot import itself (data and agents sit side by side; see
``tests/test_layers.py``).
"""

import importlib
from pathlib import Path
from typing import Any

from gymnasium.envs.registration import register, registry

from dreamgym.config import FORMAT_VERSION, WorldModelConfig
from dreamgym.data.policies import POLICIES, register_policy
from dreamgym.errors import ConfigError, WorldModelFormatError
from dreamgym.version import __version__

# torch-backed names load on first use, so that `import dreamgym` (done by every collection
# worker and by gym.make's "dreamgym:" prefix) stays cheap.
_LAZY = {
    "WorldModel": "dreamgym.models.world_model",
    "load_world_model": "dreamgym.hub",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dreamgym' has no attribute {name!r}")


# As CartPole: gym.make truncates through TimeLimit(max_episode_steps), and make_vec hands the
# same horizon to the batched vector env, which truncates itself.
# v1 is the same env in another embedded world model, its default `model` (see dreamgym.hub):
# a new default dream is a new version, so v0's dream stays what it was.
_ENVS = {
    "dreamgym/DreamCarRacing-v0": "dreamgym.envs.dream:DreamCarRacingEnv",
    "dreamgym/DreamCarRacing-v1": "dreamgym.envs.dream:DreamCarRacingEnv",
    "dreamgym/RealCarRacing-v0": "dreamgym.envs.real:RealCarRacingEnv",
}
_VECTOR_ENVS = {
    "dreamgym/DreamCarRacing-v0": "dreamgym.envs.dream_vector:DreamCarRacingVectorEnv",
    "dreamgym/DreamCarRacing-v1": "dreamgym.envs.dream_vector:DreamCarRacingVectorEnv",
}
_DEFAULT_KWARGS = {"dreamgym/DreamCarRacing-v1": {"model": "dreamgym/DreamCarRacing-v1"}}
# A version is registered only where its model is installed: Gymnasium tells every user of v0
# to upgrade once a v1 exists.
_INSTALLED = {
    "dreamgym/DreamCarRacing-v1": Path(__file__).parent / "assets" / "DreamCarRacing-v1" / "model.safetensors"
}
for _env_id, _entry_point in _ENVS.items():
    if _env_id not in registry and (_env_id not in _INSTALLED or _INSTALLED[_env_id].is_file()):
        register(
            id=_env_id,
            entry_point=_entry_point,
            max_episode_steps=1000,
            reward_threshold=900,
            vector_entry_point=_VECTOR_ENVS.get(_env_id),
            kwargs=_DEFAULT_KWARGS.get(_env_id, {}),
        )

# Collection policies driven by an agent, by entry point (imported when first made), as the
# envs above: every collection worker imports dreamgym, so it knows them too.
_AGENT_POLICIES = {
    "controller": "dreamgym.agents.policies:ControllerPolicy",
    "agent": "dreamgym.agents.policies:AgentPolicy",
}
for _name, _entry_point in _AGENT_POLICIES.items():
    if _name not in POLICIES:
        register_policy(_name, _entry_point)

__all__ = [
    "FORMAT_VERSION",
    "ConfigError",
    "WorldModel",
    "WorldModelConfig",
    "WorldModelFormatError",
    "__version__",
    "load_world_model",
]
