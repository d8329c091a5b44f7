"""Server-side state of the dashboard: one live training run, shared by every browser tab.

Nothing here imports dash. A `LiveRun` trains in a background thread through `phi_hig.train` and keeps
what the page draws (loss history, the latest example view, the kept singular values) behind a lock, so
that runs continue with no page open and every tab sees the same state.
"""
from __future__ import annotations

import math
import os
import threading
import time
import traceback
from typing import Callable, Dict, List, Optional, Union

import numpy as np

from ..errors import InvalidInputError

__all__ = ['RunConfig', 'LiveRun', 'Dashboard', 'parse_hyper', 'HYPER_KEYS']

HYPER_KEYS = ('lr', 'batch_size', 'truncation')
"""The hyperparameters the page lets a user edit (when the method defines them)."""

_LABELS = {'lr': 'learning rate', 'batch_size': 'batch size', 'truncation': 'truncation'}


def parse_hyper(method: str, key: str, text) -> Union[int, float]:
    """Parse one hyperparameter typed into the page.

    Args:
        method: method name (for the message).
        key: one of `HYPER_KEYS`.
        text: the raw value (string from a text box, or a number).

    Returns:
        ``int`` for ``batch_size``, ``float`` otherwise.

    Raises:
        InvalidInputError: with a message naming the method and the field, for empty, non-numeric,
            non-finite or out-of-range values (learning rate > 0, batch size integer >= 1,
            0 <= truncation < 1).
    """
    label = f"{method}: {_LABELS.get(key, key)}"
    raw = text.strip() if isinstance(text, str) else text
    if raw is None or raw == '':
        raise InvalidInputError(f"{label} is empty")
    if key == 'batch_size':
        try:
            value = float(raw)
        except (TypeError, ValueError):
            raise InvalidInputError(f"{label} must be a positive integer, got {raw!r}") from None
        if not math.isfinite(value) or value != int(value) or value < 1:
            raise InvalidInputError(f"{label} must be a positive integer, got {raw!r}")
        return int(value)
    try:
        value = float(raw)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{label} must be a number, got {raw!r}") from None
    if not math.isfinite(value):
        raise InvalidInputError(f"{label} must be finite, got {raw!r}")
    if key == 'lr' and value <= 0:
        raise InvalidInputError(f"{label} must be positive, got {raw!r}")
    if key == 'truncation' and not 0 <= value < 1:
        raise InvalidInputError(f"{label} must be in [0, 1), got {raw!r}")
    return value


class RunConfig:
    """What to train: experiment, methods, budget and the per-method hyperparameter overrides.

    Attributes:
        experiment: registry name (or the name of an experiment passed to the dashboard).
        methods: method names, trained one after the other by the runner.
        overrides: per method, hyperparameters replacing the experiment's defaults.
        steps: step budget per method (None: unlimited until stopped, unless ``seconds`` is given).
        seconds: wall-clock budget per method.
        preset: experiment preset ('paper' or 'test').
        seed: seed of weights and data.
    """

    def __init__(self, experiment: str, methods, overrides: Optional[Dict[str, dict]] = None,
                 steps: Optional[int] = None, seconds: Optional[float] = None, preset: str = 'paper',
                 seed: int = 0):
        self.experiment = experiment
        self.methods = list(methods)
        self.overrides = {m: dict(v) for m, v in (overrides or {}).items()}
        self.steps, self.seconds, self.preset, self.seed = steps, seconds, preset, seed

    def as_dict(self) -> dict:
        """Plain-data form (shown in the page and kept with the run)."""
        return dict(experiment=self.experiment, methods=self.methods, overrides=self.overrides, steps=self.steps,
                    seconds=self.seconds, preset=self.preset, seed=self.seed)


class LiveRun:
    """One training run in a background thread, observed through `phi_hig.train`'s ``on_record``.

    Attributes:
        config: the `RunConfig`.
        experiment: the built `Experiment`.
        status: 'starting', 'running', 'paused', 'stopping', 'stopped', 'finished' or 'failed'.
        error: the failure message when status is 'failed'.
        version: increases with every change the page should redraw.
    """

    VIEW_INTERVAL = 0.4  # seconds between example-view refreshes (the view costs one forward pass)

    def __init__(self, config: RunConfig, experiment, view_fn: Optional[Callable] = None, out: Optional[str] = None):
        from ..runner import RunControl
        self.config, self.experiment = config, experiment
        self.control = RunControl()
        self.lock = threading.Lock()
        self.history: Dict[str, Dict[str, list]] = {m: dict(step=[], wall_time=[], train_loss=[], test_loss=[],
                                                            test_step=[], test_wall_time=[])
                                                     for m in config.methods}
        self.spectra: Dict[str, np.ndarray] = {}
        self.ranks: Dict[str, list] = {}
        self.views: Dict[str, object] = {}
        self.current: Optional[str] = None
        self.status, self.error, self.version = 'starting', None, 0
        self.started = time.time()
        self.result = None
        self._view_fn = view_fn
        self.out = out  # where the finished run is written (`phi_hig.report.write_run`), if anywhere
        self.saved: Optional[str] = None
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
        with self.lock:
            if self.status == 'running':
                self.control.pause()
                self.status = 'paused'
                self.version += 1

    def resume(self) -> None:
        """Continue a paused run."""
        with self.lock:
            if self.status == 'paused':
                self.control.resume()
                self.status = 'running'
                self.version += 1

    def stop(self) -> None:
        """Stop after the current step; methods not yet started are skipped."""
        with self.lock:
            if self.status in ('running', 'paused', 'starting'):
                self.control.stop()
                self.status = 'stopping'
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
        from ..runner import train
        c = self.config
        try:
            self.result = train(self.experiment, c.methods, steps=c.steps, seconds=c.seconds, seed=c.seed,
                                overrides=c.overrides, progress=False, on_record=self._on_record,
                                control=self.control)
            if self.out:
                from ..report import write_run
                path = os.path.join(self.out, f"{self.experiment.name}-{time.strftime('%Y%m%d-%H%M%S')}")
                write_run(self.result, path)
                self.saved = path
            with self.lock:
                self.status = 'stopped' if self.control.stopped else 'finished'
                for m, final in self.result.summary.get('final', {}).items():
                    if str(final.get('status', 'ok')).startswith('diverged'):
                        self.error = f"{m}: {final['status']}"
                self.version += 1
        except Exception as err:  # shown in the page; the server keeps running
            with self.lock:
                self.status, self.error = 'failed', f"{type(err).__name__}: {err}"
                self.version += 1
            traceback.print_exc()

    def _on_record(self, record: dict, method) -> None:
        """Called by the runner after every step (in the training thread); never raises."""
        try:
            name = record['method']
            now = time.perf_counter()
            spectrum = None
            info = getattr(method, 'last_info', None)
            if info is not None and getattr(info, 'singular_values', None) is not None:
                spectrum = np.asarray(info.singular_values, dtype=float).copy()
            evaluated = _finite(record.get('test_loss'))
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
                if record['step'] > 0 or _finite(record.get('train_loss')):
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
            return dict(config=self.config.as_dict(), status=self.status, error=self.error, version=self.version,
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


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


class Dashboard:
    """The state behind one dashboard server: which experiments it offers and the current run.

    Args:
        experiments: extra experiments beyond the registry, name -> `Experiment` or factory
            ``factory(preset=...) -> Experiment`` (e.g. a user's own problem).
        default: experiment preselected in the page.
        view_fn: ``view_fn(experiment, net) -> view`` computing the example view (default
            `phi_hig.gui.views.example_view`).
        defaults: initial values of the page (preset, steps, seconds, methods).
        out: if given, every run that ends (finished or stopped) is written to ``out/EXPERIMENT-TIME`` with
            `phi_hig.report.write_run` (then ``python -m phi_hig report`` makes its figures).
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
        self.view_fn = view_fn
        self.out = out
        self.run: Optional[LiveRun] = None
        self._lock = threading.Lock()
        self._cache: Dict[tuple, object] = {}
        self._build_lock = threading.Lock()

    def experiment(self, name: str, preset: str = 'paper'):
        """Build (and cache) experiment ``name`` with ``preset``."""
        key = (name, preset)
        with self._build_lock:  # tabs asking at once build it once
            return self._build(key)

    def _build(self, key):
        name, preset = key
        if key not in self._cache:
            if name in self.extra:
                spec = self.extra[name]
                exp = spec if not callable(spec) or hasattr(spec, 'make_net') else spec(preset=preset)
            elif name in self.names:
                from ..experiments import get
                exp = get(name, preset=preset)
            else:
                raise InvalidInputError(f"unknown experiment {name!r}; available: {', '.join(self.names)}")
            self._cache[key] = exp
        return self._cache[key]

    def method_defaults(self, name: str, preset: str = 'paper') -> Dict[str, dict]:
        """Per method of experiment ``name``, its default values of the editable hyperparameters."""
        exp = self.experiment(name, preset)
        return {m: {k: hp[k] for k in HYPER_KEYS if k in hp} for m, hp in exp.methods.items()}

    def start(self, experiment: str, methods, hyper: Optional[Dict[str, Dict[str, object]]] = None,
              steps=None, seconds=None, preset: str = 'paper', seed=0) -> LiveRun:
        """Validate the page's inputs and start a run (stopping none: a run in progress is an error).

        Args:
            experiment: experiment name.
            methods: method names (at least one, each defined by the experiment).
            hyper: per method, raw values of `HYPER_KEYS` as typed (strings are parsed with `parse_hyper`).
            steps: step budget per method (raw; empty for none).
            seconds: wall-clock budget per method (raw; empty for none).
            preset: experiment preset.
            seed: integer seed.

        Raises:
            InvalidInputError: for any bad input; no run is started then.
        """
        if experiment not in self.names:
            raise InvalidInputError(f"unknown experiment {experiment!r}; available: {', '.join(self.names)}")
        methods = [m for m in (methods or []) if m]
        if not methods:
            raise InvalidInputError("select at least one method")
        exp = self.experiment(experiment, preset)
        for m in methods:
            if m not in exp.methods:
                raise InvalidInputError(f"experiment {experiment!r} does not define method {m!r}; "
                                        f"it supports {', '.join(exp.methods)}")
        overrides = {}
        for m in methods:
            given = (hyper or {}).get(m, {})
            parsed = {k: parse_hyper(m, k, v) for k, v in given.items() if k in HYPER_KEYS and k in exp.methods[m]}
            if parsed:
                overrides[m] = parsed
        steps = _optional_number(steps, 'steps', integer=True)
        seconds = _optional_number(seconds, 'seconds', integer=False)
        if steps is None and seconds is None:
            raise InvalidInputError("give a budget: steps or seconds per method")
        seed = _optional_number(seed, 'seed', integer=True, minimum=0) or 0
        with self._lock:
            if self.run is not None and self.run.active:
                raise InvalidInputError("a run is in progress: stop it first")
            config = RunConfig(experiment, methods, overrides, steps=steps, seconds=seconds, preset=preset, seed=seed)
            self.run = LiveRun(config, exp, view_fn=self.view_fn, out=self.out).start()
            return self.run

    def stop(self, wait: float = 0) -> None:
        """Stop the current run (if any) and optionally wait for its thread."""
        run = self.run
        if run is not None:
            run.stop()
            if wait:
                run.wait(wait)


def _optional_number(raw, name: str, integer: bool, minimum: float = None):
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    text = raw.strip() if isinstance(raw, str) else raw
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise InvalidInputError(f"{name} must be {'an integer' if integer else 'a number'}, got {text!r}") from None
    if not math.isfinite(value):
        raise InvalidInputError(f"{name} must be finite, got {text!r}")
    if integer:
        if value != int(value):
            raise InvalidInputError(f"{name} must be an integer, got {text!r}")
        value = int(value)
    if minimum is not None:
        if value < minimum:
            raise InvalidInputError(f"{name} must be >= {minimum}, got {text!r}")
    elif value <= 0:
        raise InvalidInputError(f"{name} must be positive, got {text!r}")
    return value
