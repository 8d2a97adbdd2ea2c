"""The package layout in pyproject.toml matches the source tree (no module silently left out)."""

import os
import tomllib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_package_directory_is_listed_in_pyproject():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        setup = tomllib.load(f)["tool"]["setuptools"]
    listed = set(setup["packages"])
    mapping = setup["package-dir"]
    found = set()
    for pkg, src in mapping.items():
        for dirpath, _, files in os.walk(os.path.join(ROOT, src)):
            if "__init__.py" in files and "__pycache__" not in dirpath:
                rel = os.path.relpath(dirpath, os.path.join(ROOT, src))
                name = pkg if rel == "." else pkg + "." + rel.replace(os.sep, ".")
                # subtrees mapped elsewhere are counted under their own mapping
                if not any(name.startswith(p) and p != pkg and p.startswith(pkg) for p in mapping):
                    found.add(name)
    assert found == listed, f"missing from pyproject: {found - listed}; stale: {listed - found}"


def test_kernels_install_as_avatar_jax_kernels():
    import avatar_jax.kernels

    assert os.path.samefile(os.path.dirname(avatar_jax.kernels.__file__), os.path.join(ROOT, "kernels"))


def test_python_finder_returns_a_working_interpreter_or_a_clear_error():
    import subprocess
    import sys

    script = os.path.join(ROOT, "scripts", "find_python.sh")
    want = f"{sys.version_info[0]}.{sys.version_info[1]}"
    res = subprocess.run(["bash", script, want], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    version = subprocess.run([res.stdout.strip(), "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True).stdout.strip()
    assert version == want
    bad = subprocess.run(["bash", script, "3.99"], capture_output=True, text=True)
    assert bad.returncode == 1 and "no working Python 3.99 found" in bad.stderr
