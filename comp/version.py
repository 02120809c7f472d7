"""comp's version: bundles and runs record it (a bundle from a newer comp is refused)."""
__version__ = "0.1.0"
