"""DreamCarRacing-v0: CarRacing dreamt by a world model's M."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from dreamgym.envs.common import WorldModelEnv, upscale
from dreamgym.envs.dynamics import LatentDream, episode_keys
from dreamgym.hub import ModelSource
from dreamgym.validation import check_seed


class DreamCarRacingEnv(WorldModelEnv):
    """CarRacing-v3 dreamt by a world model: M's sampled latents stand in for the physics.

    ## Description
    CarRacing-v3 as dreamt by a learned world model (Ha & Schmidhuber, 2018). No physics
    engine runs: each step, M (an LSTM with a mixture-of-Gaussians head) takes the current
    latent ``z``, the action and its hidden state ``h``, and samples the next ``z``. M's
    reward and termination heads give the reward and the end of the episode. V's decoder
    turns ``z`` back into a frame only when pixels are asked for, so latent stepping is
    cheap: this env exists to train agents far faster than the real car can drive.

    ## Action Space
    As CarRacing-v3. With ``continuous=True``: ``Box([-1, 0, 0], [1, 1, 1], float32)`` for
    steer, gas and brake (out-of-range values are clipped). With ``continuous=False``:
    ``Discrete(5)``: 0 do nothing, 1 steer right, 2 steer left, 3 gas, 4 brake, mapped to
    the same continuous actions CarRacing-v3 uses.

    ## Observation Space
    - ``obs_mode="latent"`` (default): ``[z, h]``, float32 of size ``z_dim + rnn_hidden``
      (288 by default). ``z`` is unbounded, ``h`` lies in [-1, 1].
    - ``obs_mode="pixels"``: V's decoding of ``z``, a ``(64, 64, 3)`` uint8 frame.

    The real env seen through the same model, ``dreamgym/RealCarRacing-v0``, has identical
    spaces, so an agent trained here runs there unchanged.

    ## Rewards
    M's reward head: its prediction of CarRacing's reward for the step (-0.1 per frame plus
    1000/N per newly visited tile, -100 for leaving the playfield).

    ## Starting State
    - ``start="first_frame"`` (default): ``z`` is drawn from the world model's bank of
      latents of real first frames (with V's posterior noise); ``h`` and the LSTM cell start
      at zero, as in the paper.
    - ``start="trajectory"``: ``(z, h, c)`` is drawn from the world model's bank of real
      states taken along real trajectories after a burn-in of real frames, so episodes start
      anywhere the real car went, with M's memory of how it got there. Pair it with a short
      horizon (``max_episode_steps=100..250``): many short dreams branched from real states
      give an optimiser less room to drift into what M never saw (as Dreamer and MBPO do).
    - ``start=p``, a number in [0, 1]: each episode starts from the trajectory bank with
      probability ``p``, else from a first frame. Full laps from the start line stay in
      training while a share of episodes begins where real cars got into trouble (a bank taken
      from the real episodes of agents that exploited the dream holds their spins and stops).

    ## Episode End
    - Termination: M's termination probability exceeds 0.5, or, with
      ``sample_termination=True``, a Bernoulli draw with that probability succeeds.
    - Truncation: after 1000 steps, as CarRacing-v3. ``gym.make`` applies the registered
      ``max_episode_steps=1000`` through ``TimeLimit`` (override it with
      ``gym.make(..., max_episode_steps=N)``); a directly constructed env truncates only when
      given ``max_episode_steps``.

    ## Arguments
    - ``model``: a :class:`~dreamgym.WorldModel`, a folder written by ``save_pretrained``, a
      Hugging Face Hub repo id, or the id of an embedded model (``"dreamgym/DreamCarRacing-v1"``).
      Default: v0's embedded model for v0, v1's for v1.
    - ``revision``: branch, tag or commit of a Hub repo.
    - ``temperature``: tau. Mixture logits are divided by tau and the Gaussian noise scaled
      by sqrt(tau). Higher is a less predictable, harder-to-exploit dream (default 1.0).
    - ``obs_mode``: ``"latent"`` or ``"pixels"``.
    - ``continuous``: Box(3) or Discrete(5) actions.
    - ``max_episode_steps``: truncation horizon of a directly constructed env (None: none).
    - ``sample_termination``: see Episode End.
    - ``start``: ``"first_frame"``, ``"trajectory"`` or the fraction of trajectory starts;
      see Starting State.
    - ``dropout``: dream-time dropout on M's input and output (Dropout's Dream Land): one
      mask per episode, drawn at reset, so each episode is dreamt by a slightly different M
      and a policy cannot rely on one M's quirks. Meant for an M trained with dropout
      (its ``config.dropout``); 0 (default) is off.
    - ``ensemble``: dream with the world model's ensemble of Ms (a model trained with
      ``dreamgym train-rnn --ensemble-size K``, K > 1). Each episode draws one member at
      reset and is dreamt by it (next ``z``, reward, termination); all members step along,
      and the ``h`` observed is member 0's, as in the real env. ``info["disagreement"]``
      reports the members' disagreement ``u`` each step (the largest distance of a member's
      predicted mean of the next ``z`` from the ensemble's average, plus the std of the
      members' predicted rewards; see :class:`~dreamgym.envs.dynamics.LatentDream`).
    - ``disagreement_penalty``: lambda >= 0; with ``ensemble=True`` the reward is M's minus
      ``lambda * u`` (MOPO's pessimistic reward), so that where the members disagree, which
      is where the dream is likely wrong, pays less. 0 (default) leaves the reward as it is.
    - ``render_mode``: ``"rgb_array"`` (the decoded frame, upscaled 4x) or ``"human"``.
    - ``device``: torch device for the model (default ``"cpu"``).

    ``reset(seed=s)`` makes the dream reproducible: the same seed and actions give the same
    trajectory.

    ## Version History
    - v0: initial version; ``start`` and ``dropout``, then ``ensemble`` and
      ``disagreement_penalty``, then ``start=p``, added without changing the default dream.
    - v1: the same env, whose default ``model`` is the embedded world model of six rounds of
      the paper's loop with a PPO agent (M fine-tuned on the episodes the agent drove; V
      unchanged), registered where that model is installed. The reference agent was
      trained only in its dream. v0's dream is unchanged.
    """

    def __init__(
        self,
        model: ModelSource = None,
        revision: str | None = None,
        temperature: float = 1.0,
        obs_mode: str = "latent",
        continuous: bool = True,
        max_episode_steps: int | None = None,
        sample_termination: bool = False,
        render_mode: str | None = None,
        device: str = "cpu",
        start: str | float = "first_frame",
        dropout: float = 0.0,
        ensemble: bool = False,
        disagreement_penalty: float = 0.0,
    ) -> None:
        super().__init__(model, revision, obs_mode, continuous, max_episode_steps, render_mode, device)
        self.dream = LatentDream(
            self.world_model, 1, temperature, sample_termination, start, dropout, ensemble, disagreement_penalty
        )
        self._frame: np.ndarray | None = None
        self._device = self.world_model.device

    @property
    def temperature(self) -> float:
        return self.dream.temperature

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[np.ndarray, dict]:
        seed = check_seed(seed)  # numpy ints as Python ints, as the vector env takes them
        super().reset(seed=seed)
        self.dream.reset(np.zeros(1, dtype=np.int64), episode_keys([self.np_random]))
        self._elapsed = 0
        self._frame = None
        return self._observation(self.dream.z, self.dream.h), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        action = self._begin_step(action)
        out = self.dream.step(torch.from_numpy(action[None]).to(self._device))
        self._frame = None
        obs = self._observation(out.z, out.h)
        info = {"termination_probability": float(out.termination_probability.item())}
        if out.disagreement is not None:
            info["disagreement"] = float(out.disagreement.item())
        if self.render_mode == "human":
            self.render()
        return obs, float(out.reward.item()), bool(out.terminated.item()), self._truncated(), info

    def _observation(self, z: torch.Tensor, h: torch.Tensor) -> np.ndarray:
        obs = super()._observation(z, h)
        if self.obs_mode == "pixels":
            self._frame = obs
        return obs

    def render(self) -> np.ndarray | None:
        if self._elapsed is None:
            return None
        if self._frame is None:
            self._frame = self.world_model.decode(self.dream.z)[0].cpu().numpy()
        return self._show(upscale(self._frame))
