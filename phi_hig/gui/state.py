"""Server-side state of the dashboard: one live training run, shared by every browser tab.

Nothing here imports dash. A `LiveRun` trains in a background thread through `phi_hig.train` and keeps
what the page draws (loss history, the latest example view, the kept singular values) behind a lock, so
that runs continue with no page open and every tab sees the same state. A run written to a folder follows the
command line's rules (`phi_hig.training.runner.run`): each run gets a new folder, locked while it trains and
writes; the stop button ends it as stopped (evaluated), not as interrupted.
"""
from __future__ import annotations

import inspect
import os
import re
import threading
import time
import traceback
from typing import Callable, Dict, List, Optional

import numpy as np

from ..checks import is_finite
from ..cli import parse_assignments, parse_value
from ..errors import InvalidInputError

__all__ = ['LiveRun', 'Dashboard', 'parse_fields', 'parse_extra', 'config_dict', 'HYPER_KEYS', 'PAGE_DEFAULTS',
           'DEFAULT_STEPS', 'DEFAULT_METHODS', 'SHOWCASE']

HYPER_KEYS = ('lr', 'batch_size', 'truncation')
"""The hyperparameters the page shows as columns (for the methods that accept them:
`phi_hig.training.methods.MethodDefinition.spec`); any other key goes into a method's "more" field as
``KEY=VALUE, KEY=VALUE``."""
PAGE_DEFAULTS = ('preset', 'steps', 'seconds', 'methods')
"""The initial page values a `Dashboard` takes (``defaults``)."""
DEFAULT_STEPS = 2000
"""The step budget per method the page starts with when none is given."""
DEFAULT_METHODS = ('adam', 'hig')
"""The methods the page preselects when none are given and the experiment has no `SHOWCASE` (those the experiment
defines; else its first two)."""
SHOWCASE = {'toy': dict(settings=dict(gamma=1.0), methods=('adam', 'gn', 'hig'))}
"""Per experiment, the settings and methods the page starts with where they differ from the library's defaults: the
setting of its demo in which the paper's point shows. The toy: γ = 1 with Adam, Gauss–Newton and HIG, as
``demos/toy.py`` runs it first (Schnell, Holl & Thuerey 2022, Fig. 1); after the page's 2000 steps HIG's held-out
loss is 6–48× below Adam's (seeds 0–4: HIG 1.9e-4 … 5.2e-4, Adam 2.9e-3 … 1.2e-2) and Gauss–Newton plateaus near
0.45. (At the factory's γ = 0.01 Adam is ahead after 2000 steps, 3.6e-3 vs 1.1e-2; HIG passes it later.)"""


def parse_fields(values: Dict[str, Dict[str, object]], what: str = 'hyper') -> Dict[str, Dict[str, object]]:
    """Raw page values ``{method: {key: text}}`` as typed values (`phi_hig.cli.parse_value`). Whether a value
    fits is decided by `phi_hig.training.spec.run_spec` (the rule the command line uses too).

    Raises:
        InvalidInputError: ``values`` is not a dict of dicts (the message names ``what``), or an empty field,
            naming the method and the key.
    """
    from ..training.spec import check_mapping
    allowed = "a dict of method -> dict of raw values, e.g. {'adam': {'lr': '0.01'}}"
    out = {}
    for method, fields in check_mapping(values, what, allowed).items():
        for key, text in check_mapping(fields, f"{what}[{method!r}]", f"a dict of raw values ({what} must be "
                                                                      f"{allowed})").items():
            if text is None or (isinstance(text, str) and not text.strip()):
                raise InvalidInputError(f"{method}: {key} is empty")
            out.setdefault(method, {})[key] = parse_value(text)
    return out


_SPLIT = re.compile(r',\s*(?=[A-Za-z_][\w.]*\s*=)')


def parse_extra(method: str, text) -> dict:
    """A method's "more" field, ``KEY=VALUE, KEY=VALUE`` (a comma before the next ``KEY=`` separates; values
    may be tuples), as ``{key: value}``; None or blank text: none.

    Raises:
        InvalidInputError: ``text`` is not a string, or an item is not ``KEY=VALUE``.
    """
    if text is not None and not isinstance(text, str):
        raise InvalidInputError(f"more[{method!r}] must be text KEY=VALUE, KEY=VALUE, got {text!r} "
                                f"({type(text).__name__})")
    items = _SPLIT.split(text.strip()) if text and text.strip() else []
    return parse_assignments(items, f"{method}: each of the more hyperparameters (KEY=VALUE, KEY=VALUE)")


def config_dict(spec, overrides: Optional[dict] = None, settings: Optional[dict] = None) -> dict:
    """What the page shows of a run's `RunSpec`: experiment, methods, the values set in the page, budget,
    preset, seed."""
    return dict(experiment=spec.name, methods=list(spec.methods), overrides={m: dict(v) for m, v in
                                                                             (overrides or {}).items()},
                settings=dict(settings or {}), steps=spec.steps, seconds=spec.seconds, preset=spec.preset,
                seed=spec.seed)


class LiveRun:
    """One training run of a validated `RunSpec` in a background thread, observed through ``on_record``.

    Attributes:
        spec: the `RunSpec` (`phi_hig.training.spec.run_spec`).
        config: its page form (`config_dict`).
        experiment: the built `Experiment`.
        status: 'starting', 'running', 'paused', 'stopping', 'stopped', 'finished' or 'failed'.
        error: the failure message when status is 'failed'; when it ended, its methods' warnings and the results
            the experiment expects (`phi_hig.experiments.base.Experiment.expected`), or None.
        version: increases with every change the page should redraw.
    """

    VIEW_INTERVAL = 0.4  # seconds between example-view refreshes (the view costs one forward pass)

    def __init__(self, spec, view_fn: Optional[Callable] = None, config: Optional[dict] = None):
        from ..training.runner import RunControl
        self.spec, self.experiment = spec, spec.experiment
        self.config = config or config_dict(spec)
        self.control = RunControl()
        self.lock = threading.Lock()
        self.history: Dict[str, Dict[str, list]] = {m: dict(step=[], wall_time=[], train_loss=[], test_loss=[],
                                                            test_step=[], test_wall_time=[])
                                                     for m in spec.methods}
        self.spectra: Dict[str, np.ndarray] = {}
        self.ranks: Dict[str, list] = {}
        self.views: Dict[str, object] = {}
        self.current: Optional[str] = None
        self.status, self.error, self.version = 'starting', None, 0
        self.started = time.time()
        self.result = None
        self._view_fn = view_fn
        self.saved: Optional[str] = None  # spec.out once the run's files are written there
        self._last_view: Dict[str, float] = {}
        self._last_version_bump = 0.0
        self.thread = threading.Thread(target=self._run, name='phi_hig-gui-train', daemon=True)

    # --- control ---------------------------------------------------------------------------------------------
    def start(self) -> 'LiveRun':
        """Start the training thread."""
        self.status = 'running'
        self.thread.start()
        return self

    def pause(self) -> None:
        """Pause after the current step (no effect unless running)."""
        self._transition(('running',), self.control.pause, 'paused')

    def resume(self) -> None:
        """Continue a paused run."""
        self._transition(('paused',), self.control.resume, 'running')

    def stop(self) -> None:
        """Stop after the current step; methods not yet started are skipped."""
        self._transition(('running', 'paused', 'starting'), self.control.stop, 'stopping')

    def _transition(self, allowed: tuple, action, status: str) -> None:
        """Under the lock: if the status is one of ``allowed``, tell the run (``action()``) and show ``status``."""
        with self.lock:
            if self.status in allowed:
                action()
                self.status = status
                self.version += 1

    @property
    def active(self) -> bool:
        """True while the training thread is alive."""
        return self.thread.is_alive()

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Join the training thread; True if it ended."""
        self.thread.join(timeout)
        return not self.thread.is_alive()

    # --- training thread -------------------------------------------------------------------------------------
    def _run(self) -> None:
        from ..training.runner import run
        try:
            write = None
            if self.spec.out:  # written while the runner holds the folder (`phi_hig.rundir.claim`)
                import functools
                from ..report import write_run
                write = functools.partial(write_run, out=self.spec.out)
            self.result = run(self.spec, progress=False, on_record=self._on_record, control=self.control,
                              write=write)
            if self.spec.out and self.result.records:
                self.saved = self.spec.out
            with self.lock:
                self.status = 'stopped' if self.control.stopped else 'finished'
                final = self.result.summary.get('final', {})
                notes = [w for f in final.values() for w in f.get('warnings', [])] + \
                    [f"{m}: {w}" for m, f in final.items() for w in f.get('expected', [])]  # a result, e.g. GN's
                self.error = '; '.join(notes) or None
                self.version += 1
        except Exception as err:  # shown in the page; the server keeps running
            with self.lock:
                self.status, self.error = 'failed', f"{type(err).__name__}: {err}"
                self.version += 1
            traceback.print_exc()
        finally:
            with self.lock:  # whatever happened, a run whose thread ends is not 'running' or 'stopping'
                if self.status in ('starting', 'running', 'paused', 'stopping'):
                    self.status = 'stopped' if self.control.stopped else 'finished'
                    self.version += 1

    def _on_record(self, record: dict, method) -> None:
        """Called by the runner after every step (in the training thread); never raises."""
        try:
            name = record['method']
            now = time.perf_counter()
            spectrum = None
            info = getattr(method, 'last_info', None)
            if info is not None and getattr(info, 'singular_values', None) is not None:
                spectrum = np.asarray(info.singular_values, dtype=float).copy()
            evaluated = is_finite(record.get('test_loss'))
            view = None
            if self._view_fn is not None and (evaluated or now - self._last_view.get(name, 0) > self.VIEW_INTERVAL):
                self._last_view[name] = now
                try:
                    view = self._view_fn(self.experiment, method.net)
                except Exception as err:
                    view = {'error': f"{type(err).__name__}: {err}"}
            with self.lock:
                self.current = name
                h = self.history[name]
                if record['step'] > 0 or is_finite(record.get('train_loss')):
                    h['step'].append(record['step'])
                    h['wall_time'].append(record['wall_time'])
                    h['train_loss'].append(_float(record.get('train_loss')))
                if evaluated:
                    h['test_step'].append(record['step'])
                    h['test_wall_time'].append(record['wall_time'])
                    h['test_loss'].append(float(record['test_loss']))
                if spectrum is not None:
                    self.spectra[name] = spectrum
                    self.ranks.setdefault(name, []).append((record['step'], int(record.get('rank', len(spectrum)))))
                if view is not None:
                    self.views[name] = view
                # redraw at most ~10 times a second from fast runs, but always after an evaluation
                if evaluated or view is not None or now - self._last_version_bump > 0.1:
                    self.version += 1
                    self._last_version_bump = now
        except Exception:
            traceback.print_exc()

    # --- reading ---------------------------------------------------------------------------------------------
    def snapshot(self) -> dict:
        """A consistent copy of everything the page draws."""
        with self.lock:
            return dict(config=dict(self.config), status=self.status, error=self.error, version=self.version,
                        current=self.current,
                        history={m: {k: list(v) for k, v in h.items()} for m, h in self.history.items()},
                        spectra={m: s.copy() for m, s in self.spectra.items()},
                        ranks={m: list(r) for m, r in self.ranks.items()},
                        views=dict(self.views), started=self.started, elapsed=time.time() - self.started,
                        saved=self.saved)

    def steps_done(self) -> Dict[str, int]:
        """Steps made so far per method."""
        with self.lock:
            return {m: (h['step'][-1] if h['step'] else 0) for m, h in self.history.items()}


def _float(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return float('nan')


class Dashboard:
    """The state behind one dashboard server: which experiments it offers and the current run.

    Args:
        experiments: extra experiments beyond the registry, name -> `Experiment` or factory
            ``factory(preset=...) -> Experiment`` (e.g. a user's own problem).
        default: experiment preselected in the page.
        view_fn: ``view_fn(experiment, net) -> view`` computing the example view (default
            `phi_hig.gui.views.example_view`).
        defaults: initial values of the page (`PAGE_DEFAULTS`: preset, steps, seconds, methods), checked with
            ``default`` by `phi_hig.training.spec.run_spec` (the rule of ``run``) when any is given or ``out`` is.
        out: if given, every run that ends (finished or stopped) is written to a new folder
            ``out/EXPERIMENT-TIME`` (``-2``, ``-3``, … when taken) with `phi_hig.report.write_run` (then
            ``python -m phi_hig report`` makes its figures), locked while it runs (`phi_hig.rundir.claim`).

    Raises:
        InvalidInputError: an unknown ``default`` experiment, or ``defaults`` / ``out`` that `run_spec` refuses
            for it (nothing is served then).
    """

    def __init__(self, experiments: Optional[dict] = None, default: Optional[str] = None,
                 view_fn: Optional[Callable] = None, defaults: Optional[dict] = None, out: Optional[str] = None):
        from ..experiments import available
        self.extra = dict(experiments or {})
        self.names: List[str] = list(self.extra) + [n for n in available() if n not in self.extra]
        if default is not None and default not in self.names:
            from ..experiments import NAMES
            hint = " (registered but not implemented yet)" if default in NAMES else ''
            raise InvalidInputError(f"unknown experiment {default!r}{hint}; available: {', '.join(self.names)}")
        self.default = default or ('toy' if 'toy' in self.names else (self.names[0] if self.names else None))
        self.defaults = dict(defaults or {})  # initial page values: preset, steps, seconds, methods
        if view_fn is None:
            from .views import example_view
            view_fn = example_view
        if not callable(view_fn):
            raise InvalidInputError(f"view_fn must be a function view_fn(experiment, net), got {view_fn!r}")
        self.view_fn = view_fn
        self.out = out
        self.run: Optional[LiveRun] = None
        self._lock = threading.Lock()
        self._cache: Dict[tuple, object] = {}
        self._build_lock = threading.Lock()
        self._check_defaults()

    def _check_defaults(self) -> None:
        """Refuse initial page values the page could not start with: what `start` (through `run_spec`) would
        refuse for the default experiment, its preset, budget and preselected methods, and ``out``."""
        from ..training.spec import check_mapping, run_spec
        self.defaults = check_mapping(self.defaults, 'defaults', f"a dict with keys {', '.join(PAGE_DEFAULTS)}")
        unknown = [k for k in self.defaults if k not in PAGE_DEFAULTS]
        if unknown:
            raise InvalidInputError(f"defaults has no key {unknown[0]!r}; the page's defaults: {', '.join(PAGE_DEFAULTS)}")
        if self.default is None or not (self.defaults or self.out is not None):
            return
        preset = self.defaults.get('preset', 'paper')
        exp = self.experiment(self.default, preset)
        methods = self.defaults.get('methods')
        spec = run_spec(exp, self.preselected(self.methods(self.default, preset), self.default) if methods is None else
                        methods,
                        steps=self.defaults.get('steps', DEFAULT_STEPS), seconds=self.defaults.get('seconds'),
                        out=self.out)
        if methods is not None:
            self.defaults['methods'] = list(spec.methods)

    def preselected(self, available: List[str], name: Optional[str] = None) -> List[str]:
        """The methods the page preselects among ``available`` (of experiment ``name``): the ``methods`` default
        (else the experiment's `SHOWCASE` methods, else `DEFAULT_METHODS`) that are among them, else the first
        two."""
        wanted = self.defaults.get('methods') or SHOWCASE.get(name, {}).get('methods') or DEFAULT_METHODS
        return [m for m in wanted if m in available] or available[:2]

    def _factory(self, name: str):
        """The factory of ``name`` (None for an `Experiment` object offered as it is)."""
        if name in self.extra:
            spec = self.extra[name]
            return None if hasattr(spec, 'make_net') or not callable(spec) else spec
        if name in self.names:
            from ..experiments import factory
            return factory(name)
        raise InvalidInputError(f"unknown experiment {name!r}; available: {', '.join(self.names)}")

    def setting_defaults(self, name: str) -> Dict[str, object]:
        """The settings of experiment ``name`` the page can set, with their defaults (the factory's keyword
        parameters other than the preset; none for an `Experiment` object)."""
        fn = self._factory(name)
        if fn is None:
            return {}
        return {k: p.default for k, p in inspect.signature(fn).parameters.items()
                if k != 'preset' and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
                and p.default is not inspect.Parameter.empty}

    def page_settings(self, name: str) -> Dict[str, object]:
        """The settings the page shows for experiment ``name`` before a run: `setting_defaults`, with those of its
        `SHOWCASE` (a value that differs from `setting_defaults` is passed to the run)."""
        defaults = self.setting_defaults(name)
        shown = SHOWCASE.get(name, {}).get('settings', {}) if name not in self.extra else {}
        return dict(defaults, **{k: v for k, v in shown.items() if k in defaults})

    def experiment(self, name: str, preset: str = 'paper', settings: Optional[dict] = None):
        """Build (and cache) experiment ``name`` with ``preset`` and ``settings``, validated by
        `phi_hig.training.spec.build_experiment` (the command line's rule)."""
        settings = dict(settings or {})
        key = (name, preset, repr(sorted(settings.items())))
        with self._build_lock:  # tabs asking at once build it once
            if key not in self._cache:
                from ..training.spec import build_experiment
                fn = self._factory(name)
                if fn is None:
                    if settings or preset not in ('paper', 'test'):
                        raise InvalidInputError(f"experiment {name!r} is given as it is: no preset or settings")
                    self._cache[key] = self.extra[name]
                elif name in self.extra:
                    self._cache[key] = build_experiment(name, preset, settings, factory=fn)
                else:
                    self._cache[key] = build_experiment(name, preset, settings)
            return self._cache[key]

    def methods(self, name: str, preset: str = 'paper', settings: Optional[dict] = None) -> List[str]:
        """The methods the page offers for experiment ``name``: those it defines and every registered method kind
        offered to it (`phi_hig.training.kinds.offered`, the rule of ``python -m phi_hig list``)."""
        from ..training.kinds import offered
        return list(offered(self.experiment(name, preset, settings)))

    def method_defaults(self, name: str, preset: str = 'paper', settings: Optional[dict] = None) -> Dict[str, dict]:
        """Per method the page offers (`methods`): its values of the `HYPER_KEYS` it accepts (one rule:
        `phi_hig.training.methods.MethodDefinition`), and under ``'more'`` its SIP inverse options as
        ``inverse_options.NAME=VALUE, ...``."""
        from ..training.methods import MethodDefinition
        exp = self.experiment(name, preset, settings)
        out = {}
        for m in self.methods(name, preset, settings):
            definition = MethodDefinition(exp, m)
            hyper = definition.validate()
            accepted = definition.spec(hyper.get('inverse'))
            out[m] = {k: hyper.get(k, accepted[k].default) for k in HYPER_KEYS if k in accepted}
            options = hyper.get('inverse_options') or {}
            out[m]['more'] = ', '.join(f'inverse_options.{k}={v!r}' for k, v in options.items())
        return out

    def start(self, experiment: str, methods, hyper: Optional[Dict[str, Dict[str, object]]] = None,
              steps=None, seconds=None, preset: str = 'paper', seed=0, settings: Optional[dict] = None,
              more: Optional[Dict[str, str]] = None) -> LiveRun:
        """Validate the page's inputs and start a run (stopping none: a run in progress is an error).

        Every value goes through `phi_hig.training.spec.run_spec`, the function the command line and `phi_hig.train`
        use, so the page refuses exactly what they refuse, before anything trains.

        Args:
            experiment: experiment name.
            methods: a list of method names (at least one, each defined by the experiment).
            hyper: a dict of method -> dict of raw values as typed (`parse_fields`), e.g.
                ``{'adam': {'lr': '0.01'}}``.
            steps: step budget per method (raw; empty for none).
            seconds: wall-clock budget per method (raw; empty for none).
            preset: experiment preset.
            seed: integer seed (raw; empty for 0).
            settings: a dict of experiment settings as typed, e.g. ``{'gamma': '1'}`` (only those changed).
            more: a dict of method -> further hyperparameters as text ``KEY=VALUE, KEY=VALUE`` (`parse_extra`); a
                key given here replaces the column of that key (``learning_rate=0.1`` the "learning rate lr" one).

        Raises:
            InvalidInputError: for any bad input; no run is started then.
        """
        from ..training.spec import check_mapping, run_spec
        if not isinstance(experiment, str) or experiment not in self.names:
            raise InvalidInputError(f"unknown experiment {experiment!r}; available: {', '.join(self.names)}")
        settings = check_mapping(settings, 'settings', "a dict of setting -> raw value, e.g. {'gamma': '1'}")
        settings = parse_fields({'setting': settings}).get('setting', {})
        overrides = parse_fields(hyper, 'hyper')
        extra = {m: parse_extra(m, text) for m, text in
                 check_mapping(more, 'more', "a dict of method -> text 'KEY=VALUE, KEY=VALUE'").items()}
        if methods is not None and not isinstance(methods, (list, tuple)):
            raise InvalidInputError(f"methods must be a list of method names, got {methods!r}")
        methods = [m for m in methods or [] if m]  # run_spec checks each name
        if not methods:
            raise InvalidInputError("select at least one method")
        exp = self.experiment(experiment, preset, settings)
        from ..training.methods import MethodDefinition
        for m, values in extra.items():  # the "more" field wins over a column, also in another spelling (lr)
            values = MethodDefinition(exp, m).canonical(values) if m in methods else values
            overrides.setdefault(m, {}).update(values)
        overrides = {m: o for m, o in overrides.items() if m in methods and o}
        with self._lock:
            if self.run is not None and self.run.active:
                raise InvalidInputError("a run is in progress: stop it first")
            spec = run_spec(exp, methods, overrides=overrides, steps=_raw(steps), seconds=_raw(seconds),
                            seed=_raw(seed) if _raw(seed) is not None else 0, out=self._new_folder(experiment))
            self.run = LiveRun(spec, view_fn=self.view_fn, config=config_dict(spec, overrides, settings)).start()
            return self.run

    def _new_folder(self, experiment: str) -> Optional[str]:
        """A folder in ``out`` that does not exist yet for the next run (``EXPERIMENT-TIME``, then ``-2``, ``-3``, …);
        None without ``out``."""
        if self.out is None:
            return None
        stem = os.path.join(self.out, f"{experiment}-{time.strftime('%Y%m%d-%H%M%S')}")
        path, n = stem, 1
        while os.path.exists(path):
            n += 1
            path = f'{stem}-{n}'
        return path

    def stop(self, wait: float = 0) -> None:
        """Stop the current run (if any) and optionally wait for its thread."""
        run = self.run
        if run is not None:
            run.stop()
            if wait:
                run.wait(wait)


def _raw(value):
    """A budget or seed field as typed: empty -> None, else `parse_value` (run_spec checks the type)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return parse_value(value)
