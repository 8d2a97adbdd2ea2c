#!/usr/bin/env bash
# Print the path of a working Python 3.12 interpreter, or fail with a clear message.
# Order: python3.12 on PATH (pyenv shims may exist but be inactive, so we run it), then pyenv's
# versions folder, then the usual system locations.
set -u
candidates=(python3.12)
if command -v pyenv >/dev/null 2>&1; then
  for p in "$(pyenv root)"/versions/3.12*/bin/python3.12; do candidates+=("$p"); done
fi
for p in "$HOME"/.pyenv/versions/3.12*/bin/python3.12 /usr/bin/python3.12 /usr/local/bin/python3.12; do
  candidates+=("$p")
done
for c in "${candidates[@]}"; do
  if out=$("$c" -c 'import sys, venv; assert sys.version_info[:2] == (3, 12); print(sys.executable)' 2>/dev/null); then
    echo "$out"
    exit 0
  fi
done
echo "error: no working Python 3.12 found (tried: ${candidates[*]}). Install Python 3.12 (e.g. 'pyenv install 3.12') and retry." >&2
exit 1
