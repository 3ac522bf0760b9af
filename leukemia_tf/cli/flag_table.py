"""A command's flag table: short flags -> config paths, parsing, and the grouped --help.

Flags map to a command's config root generically. Each entry point declares ONE table of
short flags (`--epochs` -> `train.epochs`); the flag's type, default and choices come from
the config field, so nothing is copied by hand. Any setting can also be given by its
dotted path, `--config.train.epochs=3` (also inside a `--flagfile`); an unknown path is
one error line listing the close matches. Dotted overrides win over short flags, short
flags over the `--preset`.

Flags are defined inside each entry point's `define_flags(fv)`, called only when that
entry point runs (as the TF Model Garden does), so any set of entry-point modules can be
imported together (tests, notebooks) without a DuplicateFlagError.

Flags and paths are checked before TensorFlow is imported (config.py and this module
import none): a typo costs a fraction of a second, as one `error:` line. `--help` prints
the flags grouped (data, model, optimisation, distribution, output), required ones
marked, under the console script's name; `--helpfull` is absl's full list.
"""
from __future__ import annotations

import dataclasses
import functools
import re
import sys
import textwrap
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from absl import app, flags

from leukemia_tf import config as config_lib
from leukemia_tf import presets

GROUPS = ("data", "model", "threshold", "measure", "train", "convert", "optimisation",
          "distribution", "output", "other")


@dataclasses.dataclass(frozen=True)
class Alias:
    """A short flag for a setting of the command's config root.

    Type, default and choices come from the setting at `path`. A flag that sets several
    settings (or sets one through a conversion) gives `derive` (flag value -> {path:
    value}) and its own `default`. `deprecated` names the flag that replaces this one.
    """
    path: str
    help: str
    group: str = "other"
    required: bool = False
    choices: Tuple[str, ...] = ()
    derive: Optional[Callable[[Any], Dict[str, Any]]] = None
    default: Any = None
    deprecated: str = ""


@dataclasses.dataclass(frozen=True)
class Command:
    """One entry point: its console script, config root and flag table."""
    script: str                         # the console script a user types
    doc: str
    base: Callable[[], Any]             # the root config with its defaults
    aliases: Dict[str, Alias]
    usage: str = "[flags]"
    presets: bool = False               # --preset=NAME picks a registered root
    preset_at: str = ""                 # ... for this section of the root ("" = the root)


# ---------------------------------------------------------------- flags -> config
def _kind(cmd: Command, alias: Alias):
    if alias.derive is not None:
        return type(alias.default)
    return config_lib.setting_type(type(cmd.base()), alias.path)


def define_flags(fv: flags.FlagValues, cmd: Command) -> None:
    """Define the command's short flags, `--config` and (if any) `--preset` into `fv`."""
    base = cmd.base()
    for name, a in cmd.aliases.items():
        kind = _kind(cmd, a)
        default = a.default if a.derive is not None else config_lib.get(base, a.path)
        declared = config_lib.fields(type(base))[a.path].metadata if a.path else {}
        choices = a.choices or declared.get("choices", ())
        if a.required:
            default = None
        text = ("(required) " if a.required else "") + a.help
        if a.deprecated:
            text = f"Deprecated: use --{a.deprecated}."
        define = functools.partial(_define, fv, name, default, text)
        if kind is bool:
            define("bool")
        elif kind is int:
            define("integer")
        elif kind is float:
            define("float")
        elif kind is str and choices:
            define("enum", choices)
        elif kind is str:
            define("string")
        else:  # tuples
            define("list", to_list=True)
    if cmd.presets:
        root = type(config_lib.get(base, cmd.preset_at)) if cmd.preset_at else type(base)
        flags.DEFINE_enum("preset", "default", presets.preset_names(root),
                          "Starting configuration; other flags override it.",
                          flag_values=fv)
    flags.DEFINE_multi_string("config", [], "Any setting by its dotted path: "
                              "--config.train.epochs=3 (the keys of config.json).",
                              flag_values=fv)


def _define(fv, name, default, text, kind, choices=(), to_list=False):
    if to_list and default is not None:
        default = [str(v) for v in default]
    if kind == "enum":
        flags.DEFINE_enum(name, default, list(choices), text, flag_values=fv)
    else:
        getattr(flags, "DEFINE_" + kind)(name, default, text, flag_values=fv)


def parse(fv: flags.FlagValues, argv: Sequence[str]) -> List[str]:
    """absl parsing plus `--config.a.b=v` (also inside --flagfile); returns argv left."""
    args = fv.read_flags_from_files(list(argv[1:]), force_gnu=False)
    args = [re.sub(r"^--config\.", "--config=", a) for a in args]
    return fv([argv[0], *args])


def config_from_flags(fv: flags.FlagValues, cmd: Command) -> Any:
    """The preset (or defaults), then every short flag given, then every dotted override;
    checked against the declared choices and minimums. Raises ConfigError naming the
    flag."""
    cfg = cmd.base()
    if cmd.presets and cmd.preset_at:
        cfg = dataclasses.replace(cfg, **{cmd.preset_at: presets.preset(fv["preset"].value)})
    elif cmd.presets:
        cfg = presets.preset(fv["preset"].value)
    changes: List[Tuple[str, Any]] = []
    for name, a in cmd.aliases.items():
        if not fv[name].present:
            continue
        if a.deprecated:
            print(f"note: --{name} is deprecated; use --{a.deprecated}", file=sys.stderr)
        value = fv[name].value
        changes += list((a.derive(value) if a.derive else {a.path: value}).items())
    for text in fv["config"].value or ():
        path, eq, value = text.partition("=")
        if not eq:
            raise config_lib.ConfigError(f"--config.{path} needs a value: "
                                         f"--config.{path}=VALUE", path)
        changes.append((path, value))
    known = config_lib.fields(type(cfg))
    for path, _ in changes:
        if path not in known:
            close = [f"--config.{p}" for p in config_lib.close_matches(type(cfg), path)]
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise config_lib.ConfigError(f"unknown setting --config.{path}{hint}", path)
    try:
        cfg = config_lib.apply(cfg, changes)
        config_lib.check(cfg)
    except config_lib.ConfigError as e:
        raise config_lib.ConfigError(name_flags(cmd, str(e)), e.path) from None
    for name, a in cmd.aliases.items():
        if a.required and config_lib.get(cfg, a.path) in ("", (), None):
            raise config_lib.ConfigError(f"--{name} is required (see {cmd.script} --help)",
                                         a.path)
    return cfg


def flag_for(cmd: Command, path: str) -> str:
    """The short flag of a setting, else its dotted form."""
    for name, a in cmd.aliases.items():
        if a.path == path and not a.deprecated and a.derive is None:
            return f"--{name}"
    return f"--config.{path}"


def name_flags(cmd: Command, message: str) -> str:
    """A config message with its leading dotted path replaced by the user's flag."""
    head = message.split("=")[0].split(" ")[0]
    if head in config_lib.fields(type(cmd.base())):
        return flag_for(cmd, head) + message[len(head):]
    return message


# ---------------------------------------------------------------- help
def help_text(fv: flags.FlagValues, cmd: Command) -> str:
    """The doc, a usage line with the console script's name, flags grouped."""
    lines = [cmd.doc.strip(), "", f"usage: {cmd.script} {cmd.usage}"]
    for group in GROUPS:
        names = [n for n, a in cmd.aliases.items() if a.group == group and not a.deprecated]
        extra = ["preset"] if group == "other" and cmd.presets else []
        if not names + extra:
            continue
        lines += ["", f"{group}:"]
        for name in names + extra:
            lines.append(_flag_line(fv[name]))
    example = next(a.path for a in cmd.aliases.values() if a.path and not a.required)
    value = config_lib.get(cmd.base(), example)
    lines += ["", "any setting, by its dotted path (for the trainer: the keys of config.json):",
              f"  --config.<path>=VALUE     e.g. --config.{example}={value}",
              "  --flagfile=FILE           read flags from FILE, one a line",
              "  --verbosity=N             log level: -1 warnings only, 0 info (default),",
              "                            1 debug (with TensorFlow's start-up lines)",
              "  --helpfull                every flag, absl's included"]
    deprecated = [f"--{n} (use --{a.deprecated})" for n, a in cmd.aliases.items()
                  if a.deprecated]
    if deprecated:
        lines += ["", "deprecated: " + ", ".join(deprecated)]
    return "\n".join(lines)


def _flag_line(flag) -> str:
    name = f"--[no]{flag.name}" if flag.boolean else f"--{flag.name}"
    text = flag.help  # absl puts an enum's values first: "<a|b>: help"
    if flag.default not in (None, "") and "(required)" not in flag.help:
        text += f" (default: {flag.default_as_str.strip(chr(39))})"
    # Words are never broken (a model name stays whole); a list of choices breaks after a
    # `|` (a marker and a space after each, removed once wrapped).
    lines = [line.replace("\0 ", "").replace("\0", "") for line in textwrap.wrap(
        text.replace("|", "|\0 "), 100 - 28, break_long_words=False,
        break_on_hyphens=False)] or [""]
    first = f"  {name:<25} {lines[0]}" if len(name) < 26 else f"  {name}\n{' ' * 28}{lines[0]}"
    return "\n".join([first] + [" " * 28 + line for line in lines[1:]])


def no_arguments(argv: List[str], cmd: Command) -> None:
    """UsageError for positional arguments an entry point does not take."""
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}; {cmd.script} takes flags "
                             "only")
