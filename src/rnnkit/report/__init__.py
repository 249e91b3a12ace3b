"""Reports: figures and pages built from trained runs.

`rnnkit.report.html.write_report(run_dir)` writes the self-contained HTML page of `rnnkit report DIR`;
`rnnkit.report.probe` says what the page runs a model over; `rnnkit.report.compare` draws and pages
`rnnkit compare`'s table.
"""

from rnnkit.report.html import build_report, read_metrics, write_report  # noqa: F401
from rnnkit.report.probe import Probe, memory_probe, probe_for_run, text_probe  # noqa: F401
