"""The error that points at a setting of a run: library code names its settings (``jpeg_quality``,
``images``), never a command-line flag; each command renders them in its own spelling (``--jpeg_quality``,
``--__flist__``) through its table of setting -> flag (``tfinpaint.flags.render_error``)."""
from __future__ import annotations

import re
from collections.abc import Callable

# "<name>" inside a message mentions another setting.
_MENTION = re.compile(r"<([a-z][a-z0-9_]*)>")


class SettingMessage:
    """A one-line error about a setting or an input named by a setting (mixed into an exception type).

    ``setting`` (a config field name, or None) is the setting at fault, ``value`` the value given to it;
    ``<name>`` in the message mentions another setting. ``str()`` spells settings by name (as the Python API
    does); ``render(spell)`` lets a command line spell them as its flags.
    """

    def __init__(self, message: str, setting: str | None = None, value=None):
        self.message, self.setting, self.value = message, setting, value
        super().__init__(self.render(lambda name: name))

    def render(self, spell: Callable[[str], str | None]) -> str:
        def name(setting):
            return spell(setting) or setting

        text = _MENTION.sub(lambda match: name(match.group(1)), self.message)
        if self.setting is None:
            return text
        prefix = name(self.setting) if self.value is None else f"{name(self.setting)} {self.value}"
        return f"{prefix}: {text}"


class SettingError(SettingMessage, ValueError):
    """A bad setting value, or an input that a setting names."""


class SettingFileNotFoundError(SettingMessage, FileNotFoundError):
    """A file that a setting names (or that a setting could supply) does not exist."""


class SettingFileExistsError(SettingMessage, FileExistsError):
    """A file would be replaced that a setting (such as ``overwrite``) protects."""
