"""Heat equation (Holl, Koltun & Thuerey 2021, §3.3): Adam and SGD through the diffusion vs SIP with the Bayesian-damped inverse,
and SIP with L-BFGS-B (n iterations) as the inverse.

    python demos/heat.py                                          # 64 × 64, batch 128 (the paper)
    python demos/heat.py --steps 150 --batch 32 --methods adam,sip  # the CPU study of the README's table
    python demos/heat.py --gui

Writes metrics.csv, summary.json, curves.png, x_error.png (Σ|x − x*|) and examples.png to runs/heat/.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import poisson  # noqa: E402  (same command line and figures)


def main(argv=None):
    return poisson.main(argv, name='heat', default_methods='adam,sgd,sip,sip_lbfgs', doc=__doc__)


if __name__ == '__main__':
    main()
