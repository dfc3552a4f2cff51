"""addnet's pipeline stages. Every stage runs as `python -m stages.<name>`, which imports this package first:
the one place that runs before any stage imports torch, so the CPU code paths are pinned here (stages/cpu.py)."""

from stages.cpu import pin_code_paths

pin_code_paths()
