"""Environment families: Atari (``atari``), Procgen (``procgen``), any gymnasium id (``gymnasium_ids``)
and this package's partially observable tasks (``pomdp``).

``make_env_spec`` picks the family of an id and hands it the settings it declares; the data module
and the evaluation games only use the ``EnvSpec`` interface (``base``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from impala_lit.envs.atari import AtariSpec, ale_game_name, is_atari
from impala_lit.envs.base import GAME_KEYS, EnvSpec
from impala_lit.envs.gymnasium_ids import GymSpec, check_registered
from impala_lit.envs.procgen import ProcgenSpec, check_game, is_procgen
from impala_lit.settings import plain

__all__ = ["GAME_KEYS", "AtariSpec", "EnvSpec", "GymSpec", "ProcgenSpec", "check_env_id", "env_name", "make_env_spec"]


def env_name(env_id: str) -> str:
    """A short lower-case name: ``ALE/Breakout-v5`` -> ``breakout``, ``procgen/coinrun`` -> ``coinrun``."""
    return ale_game_name(env_id)


def family(env_id: str) -> type[EnvSpec]:
    """The ``EnvSpec`` class that builds ``env_id``."""
    if is_procgen(env_id):
        return ProcgenSpec
    return AtariSpec if is_atari(env_id) else GymSpec


def check_env_id(env_id: str) -> None:
    """Raise a one-line ``SettingError`` naming close matches when ``env_id`` is unknown."""
    if is_procgen(env_id):
        check_game(env_id)
    else:
        check_registered(env_id)


def make_env_spec(env_id: str, **settings: Any) -> EnvSpec:
    """The family's spec of ``env_id``, with those of ``settings`` that the family has (the rest do not apply)."""
    check_env_id(env_id)
    cls = family(env_id)
    fields = {f.name for f in dataclasses.fields(cls)}
    return cls(env_id=env_id, **plain({k: v for k, v in settings.items() if k in fields}))
