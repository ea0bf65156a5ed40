"""The commands of ``genaccel`` (one module per group; ``genaccel/cli.py`` puts them together)."""
