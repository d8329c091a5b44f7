"""What a benchmark records about the machine it ran on: the CPU's name and the load beside it.

>>> isinstance(cpu_name(), str) and len(load_average()) in (0, 3)
True
"""
import os
import platform

__all__ = ['cpu_name', 'load_average']


def cpu_name() -> str:
    """The CPU's model name (Linux: ``/proc/cpuinfo``), else what `platform` knows (processor or machine)."""
    try:
        with open('/proc/cpuinfo', encoding='utf-8') as f:
            for line in f:
                if line.startswith('model name'):
                    return line.split(':', 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_average() -> list:
    """The load averages over 1, 5 and 15 minutes, rounded to 0.01 (empty where the system has none)."""
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, 'getloadavg') else []
