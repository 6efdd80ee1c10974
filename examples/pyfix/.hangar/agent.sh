#!/usr/bin/env bash
# A scripted agent: reads the prompt, runs the tests, fixes what they point at.
set -euo pipefail
echo "prompt: $HANGAR_PROMPT"
if python3 -m unittest -q 2>/dev/null; then
  echo "The tests already pass; nothing to do."
  exit 0
fi
sed -i 's/return a - b/return a + b/' calc.py
python3 -m unittest -q
echo "Fixed add() in calc.py: it subtracted instead of adding; the tests pass."
