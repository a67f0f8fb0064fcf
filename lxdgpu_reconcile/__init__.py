"""lxdgpu-reconcile: a declarative fleet file for shared GPU servers running LXD containers."""

__version__ = "0.1.0"
