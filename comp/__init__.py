"""comp: from a Kaggle image-classification download to a submitted CSV."""
__version__ = "0.1.0"
