"""Conventions every phi_hig command line shares (``python -m phi_hig``, ``report``, ``gui``, the demos).

* Every refusal is exit code 2 and one line ``phi_hig: error: …`` on stderr (`Parser`, `fail`), argparse's
  own errors included; warnings of a run are lines ``phi_hig: warning: …`` (`plain_warnings`, `show_plainly`),
  never a Python warning with its source line. The library names
  its Python arguments (``steps must be …``); both lines name them by their flags (``--steps must be …``,
  `as_flags`), in this one place.
* Ctrl-C (SIGINT) and SIGTERM during a run or sweep end it after its current step with its files written
  (`interrupts`); the command then exits with `EXIT_STATUS` (130 / 143) after one line saying how to resume.
* A value typed on the command line or into the dashboard is read by `parse_value`: a Python literal if it
  is one (numbers, booleans, tuples, dicts), ``nan`` / ``inf`` as floats, ``true`` / ``false`` / ``none``
  in any case, else the text itself. Whether the value fits is decided by who receives it
  (`phi_hig.training.methods.validate_hyperparameters`, the experiments' settings check).
"""
from __future__ import annotations

import argparse
import ast
import contextlib
import re
import signal
import sys
import threading
import warnings
from typing import Iterable, List

from .errors import InvalidInputError

__all__ = ['Parser', 'fail', 'report_error', 'parse_value', 'parse_assignments', 'parse_values', 'plain_warnings',
           'show_plainly', 'as_flags', 'interrupts', 'FLAGS', 'PREFIX', 'EXIT_STATUS']

PREFIX = 'phi_hig: error: '
FLAGS = {'steps': '--steps', 'seconds': '--seconds', 'seed': '--seed', 'eval_every': '--eval-every',
         'threads': '--threads', 'device': '--device', 'out': '--out', 'checkpoint_every': '--checkpoint-every',
         'resume': '--resume', 'overwrite': '--overwrite', 'methods': '--methods', 'overrides': '--hp',
         'port': '--port', 'init_from': '--init-from', 'backend': '--backend'}
"""Python argument (of `phi_hig.run_spec`, `phi_hig.train`, the dashboard) -> the command-line flag that sets it."""
_ARGUMENT = re.compile(r"(?<![\w.'\"-])(" + '|'.join(FLAGS) +
                       r")(?= must\b| needs\b| is empty| is an existing| names\b| given\b| or\b|,|:| ')|(?<=needs )(" +
                       '|'.join(FLAGS) + r")\b")
_COMMON = re.compile(r"\bcommon\[(['\"])(\w+)\1\]")


def as_flags(message) -> str:
    """A library message with the arguments it names as the command line's flags: an argument of `FLAGS` where it
    is the subject (``steps must be …`` → ``--steps must be …``, ``device 'x' is …``, ``resume: …``, ``steps, seconds
    or both``) or what one ``needs`` (``checkpoint_every needs out``), and ``common['lr']`` → ``--lr``; other words
    are left alone (``made with seed 0``).

    Example:
        >>> as_flags("checkpoint_every needs out (the folder the checkpoints go to)")
        '--checkpoint-every needs --out (the folder the checkpoints go to)'
        >>> as_flags("resume: the checkpoint c.pt was made with seed 0, this run has seed 1")
        '--resume: the checkpoint c.pt was made with seed 0, this run has seed 1'
    """
    text = _COMMON.sub(lambda m: '--' + m.group(2).replace('_', '-'), str(message))
    return _ARGUMENT.sub(lambda m: FLAGS[m.group(1) or m.group(2)], text)


class Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line ``phi_hig: error: …`` and exit code 2."""

    def error(self, message):
        """Exit with status 2 after one line ``phi_hig: error: MESSAGE (see: PROG --help)``."""
        fail(f"{message} (see: {self.prog} --help)")


def report_error(message, code: int = 2) -> int:
    """Print ``phi_hig: error: MESSAGE`` (one line: newlines and runs of spaces collapse; arguments named by their
    flags, `as_flags`) to stderr; returns ``code`` (the exit status of a refusal)."""
    sys.stderr.write(PREFIX + ' '.join(as_flags(message).split()) + '\n')
    sys.stderr.flush()
    return code


def fail(message, code: int = 2):
    """`report_error`, then exit with ``code``."""
    raise SystemExit(report_error(message, code))


_WORDS = {'true': True, 'false': False, 'none': None, 'null': None}


def parse_value(text):
    """One typed value (see the module docstring); non-strings are returned unchanged."""
    if not isinstance(text, str):
        return text
    raw = text.strip()
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        pass
    if raw.lower() in _WORDS:
        return _WORDS[raw.lower()]
    try:
        return float(raw)  # nan, inf, -inf
    except ValueError:
        return raw


def parse_assignments(items: Iterable[str], what: str) -> dict:
    """``['KEY=VALUE', ...]`` as a dict of `parse_value` values.

    Raises:
        InvalidInputError: an item without ``=`` or with an empty key (the message names ``what``).
    """
    out = {}
    for item in items or []:
        key, sep, value = item.partition('=')
        if not sep or not key.strip():
            raise InvalidInputError(f"{what} must look like KEY=VALUE, got {item!r}")
        out[key.strip()] = parse_value(value)
    return out


def parse_values(text: str, what: str) -> List:
    """A comma-separated list of values: ``0.1,1`` -> [0.1, 1]; ``(0.9,0.99),(0.8,0.9)`` -> two tuples;
    ``gram,svd`` -> two strings.

    Raises:
        InvalidInputError: an empty list.
    """
    try:
        values = ast.literal_eval(f'[{text}]')
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        values = [parse_value(v) for v in text.split(',') if v.strip()]
    if not values:
        raise InvalidInputError(f"{what} needs at least one value, got {text!r}")
    return values


def show_plainly(*categories) -> None:
    """From now on, show warnings of ``categories`` as one line ``phi_hig: warning: …`` each on stderr (no file,
    line number or source line; arguments named by their flags, `as_flags`), every time they occur; other warnings
    as before. For a program that owns its process (the demos); `plain_warnings` does the same for a block."""
    original = warnings.showwarning
    if getattr(original, 'plain_categories', None) is not None:  # already installed: widen it
        categories = tuple(original.plain_categories) + categories
        original = original.original

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, categories):
            sys.stderr.write(f"phi_hig: warning: {' '.join(as_flags(message).split())}\n")
            sys.stderr.flush()
        else:
            original(message, category, filename, lineno, file, line)

    show.plain_categories, show.original = categories, original
    warnings.showwarning = show
    for category in categories:
        warnings.simplefilter('always', category)


@contextlib.contextmanager
def plain_warnings(*categories):
    """`show_plainly` while inside: warnings of ``categories`` as one line ``phi_hig: warning: …`` each."""
    original = warnings.showwarning
    try:
        with warnings.catch_warnings():
            show_plainly(*categories)
            yield
    finally:
        warnings.showwarning = original


EXIT_STATUS = {'SIGINT': 130, 'SIGTERM': 143}
"""The exit status of a command ended by a signal (128 + the signal's number, as a shell reports it)."""


@contextlib.contextmanager
def interrupts(control):
    """While inside, SIGINT (Ctrl-C) and SIGTERM call ``control.interrupt(NAME)`` (a `phi_hig.RunControl`): the run
    ends after its current step with its checkpoints and files written, and the command exits with `EXIT_STATUS`
    instead of dying by the signal. A second signal raises `KeyboardInterrupt` at once. Installs nothing outside the
    main thread (signal handlers live there); the previous handlers are restored on leaving."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum, frame):
        name = signal.Signals(signum).name
        if control.interrupted is not None:
            raise KeyboardInterrupt
        control.interrupt(name)
        try:
            sys.stderr.write(f"phi_hig: {name}: ending after the current step and writing the files "
                             f"({name} again: at once)\n")
        except RuntimeError:  # the main thread was inside a write to stderr
            pass

    previous = {number: signal.signal(number, handle) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
