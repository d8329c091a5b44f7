"""The command line the scripts in ``demos/`` share: `demo_parser` builds a demo's argparse parser.

    parser = demo_parser(__doc__, 'toy', seconds=10.0, seeds=1, quiet=True)  # --seconds --seeds --out --quiet --gui
    parser.add_argument('--gammas', default='1,0.01', help='comma-separated γ values')  # the demo's own options
    args = parser.parse_args(argv)
"""
from __future__ import annotations

import argparse

SHARED_OPTIONS = {
    'seconds': dict(type=float, help='training wall-clock budget per method'),
    'steps': dict(type=int, help='training steps per method'),
    'seed': dict(type=int, help='seed of the initial weights and the data stream'),
    'seeds': dict(type=int, help='number of seeds (0 … seeds-1)'),
    'methods': dict(help='comma-separated methods'),
    'preset': dict(choices=['paper', 'test'], help="experiment size: 'paper' or 'test' (the tiny one the tests run)"),
}
"""The options several demos offer, by name: what `demo_parser` passes to ``add_argument`` besides the default."""


def demo_parser(doc: str, name: str, *, quiet: bool = False, **defaults) -> argparse.ArgumentParser:
    """The parser of the demo of experiment ``name``, with the demo's docstring ``doc`` as its help text.

    Every demo has ``--out`` (default ``runs/<name>``) and ``--gui``, which opens the live dashboard on ``name``
    instead of running the demo (like ``--help``, it acts as soon as it is parsed, then exits). Each keyword in
    ``defaults`` adds the option of that name in `SHARED_OPTIONS` with that default, e.g. ``seconds=10.0`` adds
    ``--seconds`` with a default of 10 s; ``quiet=True`` adds the ``--quiet`` flag. The demo adds its own options
    to the parser returned.

    A demo owns its process: from this call on, phi_hig's warnings (`phi_hig.training.WARNINGS`) print as one line
    ``phi_hig: warning: …`` each, as on the command line (`phi_hig.cli.show_plainly`).
    """
    from .cli import show_plainly
    from .training import WARNINGS
    show_plainly(*WARNINGS)
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    for option, default in defaults.items():
        if option not in SHARED_OPTIONS:
            raise TypeError(f"demo_parser: {option!r} is not a shared option ({', '.join(SHARED_OPTIONS)}); "
                            f"add it in the demo")
        parser.add_argument(f'--{option}', default=default, **SHARED_OPTIONS[option])
    parser.add_argument('--out', default=f'runs/{name}', help='output folder')
    if quiet:
        parser.add_argument('--quiet', action='store_true', help='no progress lines')
    from .gui import LaunchAction  # the dashboard's own flag; phi_hig.gui imports no dash until it serves
    parser.add_argument('--gui', action=LaunchAction, experiment=name,
                        help='open the live dashboard on this experiment instead (until Ctrl-C)')
    return parser
