"""The allocator tuning applies once, and can be switched off."""

from __future__ import annotations

import os
import subprocess
import sys


def run(env_value: str | None) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    env.pop("M3FMARL_MALLOC_TUNING", None)
    if env_value is not None:
        env["M3FMARL_MALLOC_TUNING"] = env_value
    code = "from m3fmarl._malloc import tune_malloc; print(tune_malloc(), tune_malloc())"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          check=True).stdout.strip()


def test_tuning_applies_on_glibc_and_is_idempotent() -> None:
    assert run(None) == "True True"


def test_tuning_can_be_disabled() -> None:
    assert run("0") == "False False"
