#!/usr/bin/env bash
# Usage: find_python.sh 3.12
# Print the path of a working Python of that version, or fail with a clear message.
# Order: pythonX.Y on PATH (pyenv shims may exist but be inactive, so we run it), then pyenv's
# versions folder, then the usual system locations. 3.12 runs the project; 3.11 only the golden-file
# venv (torch's CPU wheel on this disk is cp311).
set -u
want=${1:?usage: find_python.sh MAJOR.MINOR}
candidates=("python$want")
if command -v pyenv >/dev/null 2>&1; then
  for p in "$(pyenv root)"/versions/"$want"*/bin/python"$want"; do candidates+=("$p"); done
fi
for p in "$HOME"/.pyenv/versions/"$want"*/bin/python"$want" /usr/bin/python"$want" /usr/local/bin/python"$want"; do
  candidates+=("$p")
done
check="import sys, venv; assert '%d.%d' % sys.version_info[:2] == '$want'; print(sys.executable)"
for c in "${candidates[@]}"; do
  if out=$("$c" -c "$check" 2>/dev/null); then
    echo "$out"
    exit 0
  fi
done
echo "error: no working Python $want found (tried: ${candidates[*]}). Install Python $want (e.g. 'pyenv install $want') and retry." >&2
exit 1
