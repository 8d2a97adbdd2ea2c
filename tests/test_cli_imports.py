"""The command line imports only the command it runs: `avatar-jax bench ...` needs neither the photo
pipeline nor the training stack (nor their dependencies), and the top-level help imports no command."""

import subprocess
import sys

PROBE = """
import sys
from avatar_jax import cli
try:
    cli.main(sys.argv[1:])
except SystemExit:
    pass
heavy = ("avatar_jax.personalize", "avatar_jax.train", "avatar_jax.data.records", "avatar_jax.commands")
print("LOADED", sorted(m for m in sys.modules if m.startswith(heavy)))
"""


def loaded_after(*argv: str) -> str:
    out = subprocess.run([sys.executable, "-c", PROBE, *argv], capture_output=True, text=True, check=True).stdout
    return next(line for line in out.splitlines() if line.startswith("LOADED"))


def test_bench_help_imports_no_other_command():
    assert loaded_after("bench", "--help") == "LOADED ['avatar_jax.commands', 'avatar_jax.commands.bench']"


def test_top_level_help_imports_no_command_and_train_still_gets_its_options():
    assert loaded_after("--help") == "LOADED []"
    out = subprocess.run([sys.executable, "-m", "avatar_jax.cli", "train", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "--coordinator" in out.stdout and "--workdir" in out.stdout
