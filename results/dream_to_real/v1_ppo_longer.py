"""Round 4's PPO trained on from 1M to 3M dream steps in v1's dream, scored on the validation seeds at 2M and 3M."""
from stable_baselines3 import PPO

import dreamgym  # noqa: F401
from dreamgym.agents.real_validation import RealValidationCallback
from dreamgym.sb3 import make_dream_vec_env

if __name__ == "__main__":
    model = "dreamgym/DreamCarRacing-v1"
    venv = make_dream_vec_env(n_envs=64, model=model, seed=1)
    agent = PPO.load("runs/loop/round-4/ppo/checkpoints/step-1000000.zip", env=venv, device="cpu")
    validation = RealValidationCallback("runs/v1-ppo-longer", model=model, eval_freq=1_000_000)
    validation._next = 2_000_000  # 1M was scored in the loop already (718.1)
    agent.learn(2_000_000, callback=validation, reset_num_timesteps=False)
