"""The evaluation folder: what may be replaced, and replacing it only once a run is complete.

A run writes its mask set and results into a hidden folder beside the target and swaps it into place at the
end, so a run that fails half-way leaves the earlier folder (its masks and the manifest that describes them)
exactly as it was.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile

from tfinpaint.evaluation.config import SettingError
from tfinpaint.evaluation.masksets import (
    MANIFEST,
    MASK_FOLDER,
    read_manifest,
    settings_difference,
    stored_settings,
)
from tfinpaint.evaluation.report import RESULTS_JSON, RESULTS_MARKDOWN

OWN_NAMES = frozenset({MANIFEST, MASK_FOLDER, RESULTS_JSON, RESULTS_MARKDOWN})


def _stored_checkpoint(folder: str):
    """The checkpoint whose results the folder holds: its path, "unreadable", or None without results."""
    path = os.path.join(folder, RESULTS_JSON)
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as handle:
            return str(json.load(handle)["checkpoint"])
    except (OSError, ValueError, KeyError, TypeError):
        return "unreadable"


def holds_asked_set(out_dir: str, settings: dict, checkpoint: str, overwrite: bool) -> bool:
    """Whether ``out_dir`` already holds the mask set described by ``settings`` (so it can be reused).

    Refuses, without ``overwrite``, a folder that holds a different set or the results of another checkpoint;
    refuses in any case a folder holding files that no evaluation wrote (they would be lost in the swap).
    """
    if not os.path.exists(out_dir):
        return False
    if not os.path.isdir(out_dir):
        raise SettingError("exists and is not a folder", "out_dir", out_dir)
    names = set(os.listdir(out_dir))
    foreign = sorted(names - OWN_NAMES)
    if foreign:
        shown = ", ".join(foreign[:3]) + (", ..." if len(foreign) > 3 else "")
        raise SettingError(f"holds files that no evaluation wrote ({shown}); choose another <out_dir>",
                           "out_dir", out_dir)
    if not names:
        return False
    try:
        difference = settings_difference(stored_settings(read_manifest(out_dir)), settings)
    except (ValueError, KeyError, TypeError):
        difference = "its manifest is missing or unreadable"
    if difference is not None:
        if overwrite:
            return False
        raise SettingError(f"holds a different mask set ({difference}); pass <overwrite> to replace it, choose "
                           f"another <out_dir>, or reuse it with <masks> {out_dir}", "out_dir", out_dir)
    previous = _stored_checkpoint(out_dir)
    if previous is not None and previous != os.path.abspath(checkpoint) and not overwrite:
        raise SettingError(f"holds the results of another checkpoint ({previous}); pass <overwrite> to replace "
                           f"them, or choose another <out_dir> (<masks> {out_dir} reuses its mask set)",
                           "out_dir", out_dir)
    return True


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


class StagedFolder:
    """A hidden folder beside ``target`` to write into; ``commit()`` puts it in the target's place, leaving
    the target untouched until then. Used as a context manager, an uncommitted folder is removed."""

    def __init__(self, target: str):
        self.target = os.path.abspath(target)
        parent, name = os.path.split(self.target)
        os.makedirs(parent, exist_ok=True)
        self._parent, self._name = parent, name
        self.path = tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=parent)
        # mkdtemp makes the folder private (0700); the results are shared like any other output.
        os.chmod(self.path, 0o777 & ~_umask())

    def commit(self) -> None:
        if not os.path.exists(self.target):
            os.rename(self.path, self.target)
            return
        # A directory cannot be renamed onto a non-empty one: the old folder steps aside first and is put
        # back if the new one cannot take its place.
        aside = tempfile.mkdtemp(prefix=f".{self._name}.old-", dir=self._parent)
        previous = os.path.join(aside, self._name)
        os.rename(self.target, previous)
        try:
            os.rename(self.path, self.target)
        except BaseException:
            os.rename(previous, self.target)
            os.rmdir(aside)
            raise
        shutil.rmtree(aside, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        if os.path.exists(self.path):
            shutil.rmtree(self.path, ignore_errors=True)
        return False
