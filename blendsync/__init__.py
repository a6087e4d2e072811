"""blendsync: speech to ARKit face blendshapes.

The code lives in three top-level folders of the repository (``featurize/``, ``train/``,
``shared/``) and is installed under this namespace as ``blendsync.featurize``,
``blendsync.train`` and ``blendsync.shared`` so that no generic top-level name lands in
site-packages.
"""

__version__ = "0.1.0"
