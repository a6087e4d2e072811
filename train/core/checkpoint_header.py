"""A checkpoint's feature config read without torch, so that predict can start on the
audio while torch is still importing (about 1 s of every run on the reference VM).

torch.save writes a zip whose data.pkl pickles the checkpoint's dict, each tensor a
reference to a separate storage record. Here data.pkl is unpickled with every global
replaced by an inert placeholder and every storage reference by None: nothing of the file
is run or loaded, and the strings (the embedded feature config and its hash) come out as
written. The result is a hint only: predict's real load (Checkpoint.load, with all its
checks) decides, and features computed from a hint that does not match are computed again.
"""

from __future__ import annotations

import io
import json
import logging
import pickle
import zipfile
from collections import OrderedDict
from pathlib import Path

from blendsync.shared.config import FeatureConfig

log = logging.getLogger(__name__)

# Keys of the checkpoint's dict (train.core.checkpoint's too).
FEATURE_CONFIG, FEATURE_CONFIG_HASH = "feature_config_json", "feature_config_hash"


class _Inert:
    """What every global of the pickle becomes: callable, accepting any state, doing nothing."""

    def __init__(self, *args, **kwargs):
        pass

    def __call__(self, *args, **kwargs):
        return self

    def __setstate__(self, state):
        pass


class _HeaderUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) == ("collections", "OrderedDict"):
            return OrderedDict
        return _Inert

    def persistent_load(self, pid):
        return None


def peek_feature_config(checkpoint: str | Path) -> FeatureConfig | None:
    """The checkpoint's embedded feature config when it parses and hashes to its stored hash;
    None for anything else (not a torch zip, another layout, a damaged file: the real load
    reports those)."""
    try:
        with zipfile.ZipFile(checkpoint) as z:
            name = next(n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl")
            doc = _HeaderUnpickler(io.BytesIO(z.read(name))).load()
        fc = FeatureConfig.from_embedded(json.loads(doc[FEATURE_CONFIG]))
        if fc.hash != doc[FEATURE_CONFIG_HASH]:
            return None
        return fc
    except Exception as e:  # a hint only: the real load decides and reports
        log.debug("no feature config read ahead from %s: %s", checkpoint, e)
        return None
