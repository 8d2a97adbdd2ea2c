#!/usr/bin/env bash
# Print the path of a working Python 3.11 (for `make golden` only: torch's CPU wheel here is cp311).
set -u
candidates=(python3.11)
if command -v pyenv >/dev/null 2>&1; then
  for p in "$(pyenv root)"/versions/3.11*/bin/python3.11; do candidates+=("$p"); done
fi
for p in "$HOME"/.pyenv/versions/3.11*/bin/python3.11 /usr/bin/python3.11 /usr/local/bin/python3.11; do
  candidates+=("$p")
done
for c in "${candidates[@]}"; do
  if out=$("$c" -c 'import sys, venv; assert sys.version_info[:2] == (3, 11); print(sys.executable)' 2>/dev/null); then
    echo "$out"
    exit 0
  fi
done
echo "error: no working Python 3.11 found for the golden-file venv (tried: ${candidates[*]})." >&2
exit 1
