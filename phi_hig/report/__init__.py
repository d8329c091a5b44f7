"""Run outputs and reports: the metrics and summary files of a run folder (`runs`), every figure (`figures`), the
summary table and Markdown report (`summary`, ``python -m phi_hig report DIR``) and the papers' tables
(`tables`). matplotlib is loaded only when a figure is drawn."""
from .runs import BASE_COLUMNS, NUMBER_COLUMNS, read_run, write_metrics_csv, write_summary
from .figures import plot_curves, pyplot, sweep_figure, value_label
from .summary import REPORT_FILES, main, summary_rows, write_report, write_run
from .tables import print_table, seed_table, timing_table

__all__ = ['write_run', 'write_metrics_csv', 'write_summary', 'read_run', 'summary_rows', 'write_report', 'main', 'pyplot',
           'plot_curves', 'sweep_figure', 'value_label', 'print_table', 'seed_table', 'timing_table', 'REPORT_FILES',
           'BASE_COLUMNS', 'NUMBER_COLUMNS']
