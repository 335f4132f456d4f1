"""Agents for the dream: adapters to RL libraries and controllers trained in dreamgym's envs.

Submodules are imported explicitly (for example :mod:`dreamgym.agents.sb3`) so that
``import dreamgym`` never pulls in an RL library.
"""
