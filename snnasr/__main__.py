"""``python -m snnasr`` runs the CLI (useful where the console script is not on PATH)."""

from snnasr.cli import main

main()
