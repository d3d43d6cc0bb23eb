"""Idempotent absl flag definitions: train.py, infer.py and the sub-commands share flag names
(``--__flist__``, ``--__mask_type__``, ...) and may be imported into one process (tests, the console script),
so every command defines its flags through these helpers, which skip a flag that already exists."""
from __future__ import annotations

import sys

from absl import flags

_TRUE = ("1", "true", "t", "yes", "y", "on")
_FALSE = ("0", "false", "f", "no", "n", "off")


class _BoolStringParser(flags.ArgumentParser):
    """A boolean that takes a separate value (``--__gen_masks__ true``), as the original scripts' users type it."""

    syntactic_help = "true/false"

    def parse(self, argument):
        if isinstance(argument, bool):
            return argument
        text = str(argument).strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE:
            return False
        raise ValueError(f"expected true or false, got {argument!r}")

    def flag_type(self):
        return "bool"


def define(kind: str, name: str, default, help_text: str, flag_values=flags.FLAGS, aliases=(), **kwargs):
    """Defines flag ``name`` of ``kind`` (string, integer, float, bool_value, enum, multi_string) unless it
    already exists; ``aliases`` are alternative spellings (``--flist`` for ``--__flist__``)."""
    if name not in flag_values:
        if kind == "bool_value":
            flags.DEFINE(_BoolStringParser(), name, default, help_text, flag_values=flag_values)
        elif kind == "enum":
            flags.DEFINE_enum(name, default, kwargs.pop("enum_values"), help_text, flag_values=flag_values, **kwargs)
        else:
            getattr(flags, f"DEFINE_{kind}")(name, default, help_text, flag_values=flag_values, **kwargs)
    for alias in aliases:
        if alias not in flag_values:
            flags.DEFINE_alias(alias, name, flag_values=flag_values)
    # `--help` lists the key flags of the script being run (train.py, infer.py, the console script), which
    # only imports the module defining them: make them key flags of that script.
    for key in (name, *aliases):
        flag_values.register_key_flag_for_module(sys.argv[0], flag_values[key])
