"""Live training dashboard in the browser (plotly Dash, optional extra: ``pip install 'phi_hig[gui]'``).

    python -m phi_hig gui [EXPERIMENT] [--port N] [--preset test] [--steps N] [--methods adam,hig] [--out runs/gui]

starts a local web server bound to 127.0.0.1 and prints its address. In the page one picks an experiment,
the methods to compare and their main hyperparameters, starts, pauses and stops training, and watches the
loss curves, the current prediction next to the ground truth and the HIG singular-value spectrum. Training
runs in a background thread of the server (through `phi_hig.train`), so runs continue while the page is
closed and every tab shows the same state.

Importing this package does not import dash; `create_app` / `serve` / `launch` / `main` do.
"""
from __future__ import annotations

import argparse
import socket
import sys
import threading
from typing import Optional, Sequence

from ..errors import InvalidInputError
from .state import Dashboard, LiveRun, parse_fields, parse_extra

__all__ = ['main', 'launch', 'LaunchAction', 'serve', 'create_app', 'Server', 'Dashboard', 'LiveRun', 'parse_fields',
           'parse_extra']

DEFAULT_PORT = 8050
HOST = '127.0.0.1'


def create_app(dashboard: Dashboard, interval_ms: int = 600):
    """The Dash app of ``dashboard`` (see `phi_hig.gui.app.create_app`)."""
    from .app import create_app as _create
    return _create(dashboard, interval_ms)


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((HOST, port))
            return True
        except OSError:
            return False


class Server:
    """A dashboard served on 127.0.0.1 by a threaded WSGI server.

    Attributes:
        dashboard: the server-side `Dashboard` state.
        app: the Dash app.
        port: the port actually bound.
        url: ``http://127.0.0.1:PORT/``.
    """

    def __init__(self, dashboard: Dashboard, port: Optional[int] = None, interval_ms: int = 600):
        import logging
        from .. import checks
        if not isinstance(dashboard, Dashboard):
            raise InvalidInputError(f"dashboard must be a phi_hig.gui.Dashboard, got {type(dashboard).__name__}")
        if port is not None:
            port = checks.integer('port', port, low=0, high=65535)
        interval_ms = checks.integer('interval_ms', interval_ms, low=1)
        from werkzeug.serving import make_server
        logging.getLogger('werkzeug').setLevel(logging.WARNING)  # no line per poll request
        self.dashboard = dashboard
        self.app = create_app(dashboard, interval_ms)
        if port is None:
            port = DEFAULT_PORT if _port_free(DEFAULT_PORT) else 0
        elif port and not _port_free(port):
            raise OSError(f"port {port} on {HOST} is in use; choose another with --port (0: any free port)")
        self._server = make_server(HOST, port, self.app.server, threaded=True)
        self.port = self._server.server_port
        self.url = f'http://{HOST}:{self.port}/'
        self._thread: Optional[threading.Thread] = None

    def start(self) -> 'Server':
        """Serve in a background thread (returns immediately)."""
        self._thread = threading.Thread(target=self._server.serve_forever, name='phi_hig-gui-http', daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until Ctrl-C, then stop the run and the server."""
        try:
            self._server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            self.close()

    def close(self, wait: float = 10.0) -> None:
        """Stop the current run (waiting up to ``wait`` s for its step to end) and the HTTP server."""
        self.dashboard.stop(wait=wait)
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(5)
            self._thread = None
        self._server.server_close()

    def __enter__(self):
        return self if self._thread is not None else self.start()

    def __exit__(self, *exc):
        self.close()


def serve(experiment: Optional[str] = None, port: Optional[int] = None, *, background: bool = False,
          experiments: Optional[dict] = None, preset: Optional[str] = None, steps: Optional[int] = None,
          seconds: Optional[float] = None, methods: Optional[Sequence[str]] = None, out: Optional[str] = None,
          quiet: bool = False, interval_ms: int = 600) -> Server:
    """Start the dashboard on 127.0.0.1.

    Args:
        experiment: experiment preselected in the page (registry name or a key of ``experiments``).
        port: port to bind (None: 8050 if free, else any free port; 0: any free port).
        background: serve in a daemon thread and return the `Server`; otherwise block until Ctrl-C.
        experiments: extra experiments offered besides the registry, name -> `Experiment` or factory
            ``factory(preset=...)``.
        preset: preset preselected in the page ('paper' or 'test').
        steps: step budget preselected in the page.
        seconds: wall-clock budget preselected in the page.
        methods: methods preselected in the page (names, or one comma-separated string; default adam and hig
            where defined).
        out: write every run that ends to ``out/EXPERIMENT-TIME`` (metrics.csv, summary.json, curves.png).
        quiet: do not print the address.
        interval_ms: page refresh interval.

    Raises:
        InvalidInputError: before anything is served: an unknown experiment, or a preset, budget, methods or
            ``out`` that ``run`` would refuse for it (`phi_hig.training.spec.run_spec`, through `Dashboard`), or a bad
            port or interval.
    """
    if isinstance(experiment, str) or experiment is None:
        name = experiment
    else:  # an Experiment object
        experiments = dict(experiments or {}, **{experiment.name: experiment})
        name = experiment.name
    defaults = {k: v for k, v in dict(preset=preset, steps=steps, seconds=seconds, methods=methods).items()
                if v is not None}
    if seconds is not None and steps is None:
        defaults['steps'] = None
    dashboard = Dashboard(experiments=experiments, default=name, defaults=defaults, out=out)
    server = Server(dashboard, port=port, interval_ms=interval_ms)
    if not quiet:
        print(f"phi_hig dashboard: {server.url}  (Ctrl-C to stop)", flush=True)
    if background:
        return server.start()
    server.serve_forever()
    return server


def launch(experiment, **kwargs) -> None:
    """Open the dashboard with ``experiment`` preselected, print its address and block until Ctrl-C.

    This is what the demos' ``--gui`` flag calls. ``kwargs`` go to `serve` (port, preset, steps, seconds,
    methods, experiments).
    """
    kwargs.pop('background', None)
    serve(experiment, **kwargs)


class LaunchAction(argparse.Action):
    """An argparse flag (the demos' ``--gui``) that serves the dashboard with ``experiment`` preselected
    (`launch`, until Ctrl-C) as soon as it is parsed, then exits, like ``--help``::

        parser.add_argument('--gui', action=LaunchAction, experiment='toy', help='open the dashboard instead')
    """

    def __init__(self, option_strings, dest, experiment: str, **kwargs):
        super().__init__(option_strings, dest, nargs=0, default=False, **kwargs)
        self.experiment = experiment

    def __call__(self, parser, namespace, values, option_string=None):
        launch(self.experiment)
        parser.exit()


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m phi_hig gui [EXPERIMENT] [--port N] [--preset P] [--steps N] [--seconds S] [--methods a,b]``.

    A bad argument is exit code 2 with one line ``phi_hig: error: …``.
    """
    from ..cli import Parser, report_error
    p = Parser(prog='python -m phi_hig gui', description=__doc__.split('\n\n')[0],
               formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('experiment', nargs='?', help='experiment preselected in the page (default: toy)')
    p.add_argument('--port', type=int, help=f'port on {HOST} (default {DEFAULT_PORT}, or any free one; 0: any)')
    p.add_argument('--preset', choices=('paper', 'test'), help='experiment preset preselected (default paper)')
    p.add_argument('--steps', type=int, help='step budget per method preselected (default 2000)')
    p.add_argument('--seconds', type=float, help='wall-clock budget per method preselected')
    p.add_argument('--methods', help='comma-separated methods preselected (default adam,hig)')
    p.add_argument('--out', help='write each run that ends to OUT/EXPERIMENT-TIME (then: python -m phi_hig report)')
    args = p.parse_args(list(sys.argv[1:] if argv is None else argv))
    try:  # every value is checked (`Dashboard`, `Server`) before the server starts
        serve(args.experiment, port=args.port, preset=args.preset, steps=args.steps, seconds=args.seconds,
              methods=args.methods, out=args.out)
    except (ImportError, InvalidInputError, OSError) as err:
        return report_error(err)
    return 0
