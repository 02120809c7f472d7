"""comp: from a Kaggle image-classification download to a submitted CSV."""
__version__ = "0.1.0"


def __getattr__(name):
    # load_bundle imports torch: only when asked for, so `import comp` stays cheap
    if name == "load_bundle":
        from .bundle import load_bundle

        return load_bundle
    raise AttributeError(f"module 'comp' has no attribute {name!r}")
