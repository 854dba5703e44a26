"""Entry point for ``python -m reconciler``."""

from reconciler.cli.cli import main

if __name__ == "__main__":
    main()
