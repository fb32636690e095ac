"""Where a setting of ``kubling server``/``agent`` comes from: flag > env > file > default.

Every flag can also be given as a key of a YAML config file (``--config``, default
``/etc/kubling/config.yaml``; the key is the flag's long name without dashes, e.g.
``https-port: 7443``) or as an environment variable ``KUBLING_<FLAG>`` (dashes become
underscores, upper case: ``KUBLING_HTTPS_PORT``), as k3s does with ``K3S_*`` and
``/etc/rancher/k3s/config.yaml``. That lets an install script or a systemd unit carry the
configuration without rewriting the command line.

The argparse parser stays the single description of the options: its actions say which
keys exist, how values convert (``type``, ``choices``) and what a flag means (``store_true``,
``append``, ``count``), so a new flag needs no extra registration here. Call
``parse_args`` with the parser of one command (not a parser with subcommands) and do not
mark options ``required=True``: argparse would reject a value given by env or file.

Mistakes are usage errors (exit 2) that name their source: an unknown key in the file
(with a suggestion), or a bad value such as ``KUBLING_HTTPS_PORT: invalid int value: 'abc'``.
"""

from __future__ import annotations

import argparse
import difflib
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import yaml

ENV_PREFIX = "KUBLING_"
CONFIG_DEST = "config"
_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})


class _BadValue(Exception):
    """A value from env or file that does not fit its option; becomes ``parser.error``."""


def add_config_option(parser: argparse.ArgumentParser, *, default_config: str) -> None:
    """Add ``--config FILE`` to ``parser`` unless it already has it (so ``--help`` shows it)."""
    if any(action.dest == CONFIG_DEST for action in parser._actions):
        return
    parser.add_argument(
        "--config",
        metavar="FILE",
        default=None,
        help=f"YAML file of settings, keys are flag names (default {default_config})",
    )


def parse_args(
    parser: argparse.ArgumentParser,
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    default_config: str = "/etc/kubling/config.yaml",
    env_aliases: Mapping[str, Sequence[str]] | None = None,
) -> argparse.Namespace:
    """Parse ``argv`` and fill every option not given on the command line from env or file.

    ``env_aliases`` maps a flag name to extra environment variables that set it, for the
    names PRODUCT.md keeps from k3s (``{"server": ["KUBLING_URL"]}``); they are consulted
    after ``KUBLING_<FLAG>``. ``KUBLING_CONFIG`` names the config file like ``--config``;
    afterwards ``namespace.config`` is the file that was read, or ``None``.
    Exits with status 2 (``parser.error``) on any usage error.
    """
    add_config_option(parser, default_config=default_config)
    namespace = parser.parse_args(list(argv))
    given = _given_on_command_line(parser, argv)
    settings = _configurable_actions(parser)
    file_path, file_values = _read_config_file(parser, namespace, env, default_config)
    _reject_unknown_keys(parser, file_path, file_values, settings)
    setattr(namespace, CONFIG_DEST, file_path)
    aliases = env_aliases or {}
    for action, keys in settings.items():
        if action.dest in given:
            continue
        try:
            value = _value_from_env(keys, action, env, aliases)
            if value is _ABSENT:
                value = _value_from_file(keys, action, file_path, file_values)
        except _BadValue as exc:
            parser.error(str(exc))
        if value is not _ABSENT:
            setattr(namespace, action.dest, value)
    return namespace


class _Absent:
    """No source had a value: keep argparse's default."""


_ABSENT: Any = _Absent()


# --- which options, which were given ---------------------------------------------------


def _configurable_actions(parser: argparse.ArgumentParser) -> dict[argparse.Action, list[str]]:
    """Options that env and file may set, with their keys (long names without dashes).

    An option with aliases has several keys; they are resolved together so that env under
    one alias still beats the file under another. Options with only a short name (``-v``)
    are keyed by their ``dest`` in flag spelling. ``--help``, ``--version`` and
    ``--config`` itself are not settings.
    """
    settings: dict[argparse.Action, list[str]] = {}
    for action in parser._actions:
        if not action.option_strings or action.dest in (argparse.SUPPRESS, CONFIG_DEST):
            continue
        if isinstance(action, argparse._HelpAction | argparse._VersionAction):
            continue
        long_names = [s[2:] for s in action.option_strings if s.startswith("--")]
        settings[action] = long_names or [action.dest.replace("_", "-")]
    return settings


def _given_on_command_line(parser: argparse.ArgumentParser, argv: Sequence[str]) -> set[str]:
    """The dests that ``argv`` set, whatever spelling (``--x=1``, abbreviations, ``-abc``).

    Parses again into a namespace where every dest is already present as ``None``:
    argparse then skips its defaults, so a dest that is no longer ``None`` afterwards was
    set by the command line.
    """
    probe = argparse.Namespace()
    for action in parser._actions:
        if action.dest != argparse.SUPPRESS:
            setattr(probe, action.dest, None)
    parser.parse_args(list(argv), namespace=probe)
    return {dest for dest, value in vars(probe).items() if value is not None}


# --- the sources -----------------------------------------------------------------------


def _value_from_env(
    keys: Sequence[str],
    action: argparse.Action,
    env: Mapping[str, str],
    aliases: Mapping[str, Sequence[str]],
) -> Any:
    for key in keys:
        for name in (env_name(key), *aliases.get(key, ())):
            raw = env.get(name)
            if raw is not None:
                return _convert(action, key, raw, source=name, from_env=True)
    return _ABSENT


def _value_from_file(
    keys: Sequence[str], action: argparse.Action, file_path: str | None, values: Mapping[str, Any]
) -> Any:
    for key in keys:
        if key in values:
            return _convert(action, key, values[key], source=f"{file_path}: {key}", from_env=False)
    return _ABSENT


def env_name(key: str) -> str:
    """``https-port`` → ``KUBLING_HTTPS_PORT``: the variable that sets that flag."""
    return ENV_PREFIX + key.replace("-", "_").upper()


def _read_config_file(
    parser: argparse.ArgumentParser,
    namespace: argparse.Namespace,
    env: Mapping[str, str],
    default_config: str,
) -> tuple[str | None, dict[str, Any]]:
    """The config file's path and settings; a named file must exist, the default may not."""
    named = getattr(namespace, CONFIG_DEST, None) or env.get(env_name(CONFIG_DEST))
    path = str(named) if named else default_config
    if not named and not os.path.exists(path):
        return None, {}
    try:
        with open(path, encoding="utf-8") as handle:
            document = yaml.safe_load(handle)
    except FileNotFoundError:
        parser.error(f"config file {path} does not exist")
    except OSError as exc:
        parser.error(f"cannot read config file {path}: {exc.strerror or exc}")
    except yaml.YAMLError as exc:
        parser.error(f"config file {path} is not valid YAML: {exc}")
    if document is None:
        return path, {}
    if not isinstance(document, dict):
        parser.error(f"config file {path} must be a mapping of flag names to values")
    return path, {str(k): v for k, v in document.items()}


def _reject_unknown_keys(
    parser: argparse.ArgumentParser,
    path: str | None,
    values: Mapping[str, Any],
    settings: Mapping[argparse.Action, list[str]],
) -> None:
    """A misspelt key would otherwise be silently ignored: make it a usage error."""
    known = [key for keys in settings.values() for key in keys]
    for key in values:
        if key in known:
            continue
        close = difflib.get_close_matches(key.lstrip("-").replace("_", "-"), known, n=1)
        hint = f"did you mean '{close[0]}'?" if close else f"not a flag of '{parser.prog}'"
        parser.error(f"unknown key '{key}' in {path}: {hint}")


# --- conversion ------------------------------------------------------------------------


def _convert(action: argparse.Action, key: str, raw: Any, *, source: str, from_env: bool) -> Any:
    """Turn an env string or a YAML value into what the command line would have produced."""
    if isinstance(action, argparse.BooleanOptionalAction):
        value = _to_bool(raw, source)
        return not value if key.startswith("no-") else value
    if isinstance(action, argparse._StoreConstAction | argparse._AppendConstAction):
        # A bare switch (store_true/store_false/store_const): "true" means "flag given".
        if not _to_bool(raw, source):
            return action.default
        return [action.const] if isinstance(action, argparse._AppendConstAction) else action.const
    if isinstance(action, argparse._CountAction):
        return _convert_scalar(int, action.choices, raw, source)
    if _takes_list(action):
        items = _split(raw) if from_env else (raw if isinstance(raw, list) else [raw])
        return [_convert_scalar(action.type, action.choices, item, source) for item in items]
    if isinstance(raw, list | dict):
        raise _BadValue(f"{source}: expected a single value, got {type(raw).__name__}")
    return _convert_scalar(action.type, action.choices, raw, source)


def _takes_list(action: argparse.Action) -> bool:
    list_nargs = action.nargs in ("*", "+") or isinstance(action.nargs, int)
    return isinstance(action, argparse._AppendAction | argparse._ExtendAction) or list_nargs


def _convert_scalar(convert: object, choices: Any, raw: Any, source: str) -> Any:
    """Apply the action's ``type`` to the string form of ``raw``, as argparse would."""
    text = ("true" if raw else "false") if isinstance(raw, bool) else str(raw)
    func: Callable[[str], Any] = convert if callable(convert) else str
    try:
        value = func(text)
    except argparse.ArgumentTypeError as exc:
        raise _BadValue(f"{source}: {exc}") from exc
    except (TypeError, ValueError) as exc:
        name = getattr(func, "__name__", repr(func))
        raise _BadValue(f"{source}: invalid {name} value: {text!r}") from exc
    if choices is not None and value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise _BadValue(f"{source}: invalid choice: {text!r} (choose from {allowed})")
    return value


def _to_bool(raw: Any, source: str) -> bool:
    if isinstance(raw, bool):
        return raw
    text = str(raw).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise _BadValue(f"{source}: invalid boolean value: {raw!r} (use true or false)")


def _split(raw: str) -> list[str]:
    """Comma-separated env lists, as k3s reads ``K3S_*`` values of repeatable flags."""
    return [item.strip() for item in raw.split(",") if item.strip()]
