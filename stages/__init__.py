"""addnet's pipeline stages. Every stage runs as `python -m stages.<name>`, which imports this package first:
the one place that runs before any stage imports torch, so the CPU code paths are pinned here (stages/cpu.py)."""

import sys

from stages.cpu import pin_code_paths

pin_code_paths()
# DVC hands a stage its own stdout. Where that is a pipe (a CI log, `dvc repro | tee`, a test), Python would
# buffer whole blocks and the train stage's first line would show only when it ends.
sys.stdout.reconfigure(line_buffering=True)
