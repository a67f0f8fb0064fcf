"""Entry point for ``python -m lxdgpu_reconcile``."""

from lxdgpu_reconcile.cli import main

if __name__ == "__main__":
    main()
