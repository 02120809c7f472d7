"""comp: from a Kaggle image-classification download to a submitted CSV.

The package follows the data, one sub-package per stage; each imports only from the stages below it, and no
module imports in a circle (tests/test_imports.py checks both):

    cli, demo                    the command line and the offline demo
    tune/     deploy/            comp tune and comp grid | comp export and comp infer (bundles/)
    blend/                       comp blend, report, submit (submissions/)
    train/                       comp train and predict: the planner, --budget, feeds, augmentation (runs/)
    models/                      the nets: one registry, one file per family, the pretrained backbones
    prepare/                     comp prepare: layouts, image files, the cache, folds (folds/)
    io, progress, version, labels, weights, runs, ensemble     shared ground: atomic files, the label map,
                                 where pretrained weights are, the run folder's format, the blend maths
"""
from .version import __version__

__all__ = ["__version__", "load_bundle"]


def __getattr__(name):
    # load_bundle imports torch: only when asked for, so `import comp` stays cheap
    if name == "load_bundle":
        from .deploy.infer import load_bundle

        return load_bundle
    raise AttributeError(f"module 'comp' has no attribute {name!r}")
