"""``REPORT.md``: a finished run's data source, tables, Fig. 1, regression quality, pair balance, settings.

:func:`write_report` (:mod:`learner.report.document`) turns a run directory into ``REPORT.md`` next to its
plots. The kind of run is read from its results file and picks the sections:

* ``table3`` / ``ablation`` / ``sweep`` experiments (``results.json``): :mod:`learner.report.experiment`;
* a single ``classification`` run (``metrics.json``): :mod:`learner.report.classification`;
* a single ``pretraining`` run (``metrics.json`` and ``metrics.csv``): :mod:`learner.report.pretraining`.

The sections they share (banner, regression quality, pair balance, settings, environment) are in
:mod:`learner.report.sections`.

Every sentence about the data is generated from it (:mod:`learner.report.prose`): the class mix, the
always-majority and chance reference rows against the models, one verdict per comparison, and warnings
for a test set with fewer than 5 patients or a missing class.

Every report opens with the data source (PHANTOM or REAL) in a banner, then the tables (Section 3's Tables 3
and 4, rendered by :mod:`learner.report.tables`), Fig. 1, the regression quality of every encoder
against the predict-the-train-mean baseline (computed from the stored metrics, with a verdict), the
class balance of every pair set, the settings, the config and the environment (``run.json``).

This package comes after :mod:`learner.experiments` in the import order: it reads what the experiments
produce, and only the Python API and the CLI import it.
"""

from learner.report.document import REPORT_FILE, write_report

__all__ = ["REPORT_FILE", "write_report"]
