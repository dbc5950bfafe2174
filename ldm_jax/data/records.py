"""The record every source yields, and the error a bad one raises.

A source is a grain random-access data source (`__len__`, `__getitem__(index)`) whose items are
plain dicts, cheap to pickle between worker processes:

    {"key": str,                      # unique and stable: "<shard>/<member stem>", a relative path, ...
     "image": bytes | np.ndarray,     # encoded file bytes, or an already decoded uint8 HWC array
     "label": int,                    # optional: class index
     "caption": str,                  # optional
     "segmentation": bytes | np.ndarray,  # optional: a map of class indices (H, W) uint8 / int32
     "boxes": list[dict],             # optional: [{"category": int, "bbox": (x0, y0, w, h) relative}]
     "meta": dict}                    # optional: anything else the source knows (width, height, ...)

Decoding happens later, in the pipeline's worker processes. A record that cannot be used raises
`BadRecord(key, reason)`; the pipeline skips and counts it, it never stops the run by itself.
"""
from typing import Any

Record = dict[str, Any]


class BadRecord(ValueError):
    """A record that cannot be used: `key` names it, `reason` says what is wrong with it."""

    def __init__(self, key: str, reason: str):
        super().__init__(f"bad record {key!r}: {reason}")
        self.key = key
        self.reason = reason

    def __reduce__(self):  # picklable across grain worker processes
        return type(self), (self.key, self.reason)
