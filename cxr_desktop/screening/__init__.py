"""Batch-folder screening (no Qt): a ranked worklist for a folder of studies.

- :mod:`~cxr_desktop.screening.runner`: ``screen_folder(folder, engine, out_csv, options=ScreenOptions(...))``,
  the generator the command line (``cxr-screen``) and the app's screening dialog both drive;
- :mod:`~cxr_desktop.screening.walk`: which files are inputs;
- :mod:`~cxr_desktop.screening.dataset`: decode + preprocess in DataLoader worker processes;
- :mod:`~cxr_desktop.screening.results`: rows, the crash-safe journal, formula-safe CSV and JSON;
- :mod:`~cxr_desktop.screening.heatmaps`: Grad-CAM PNGs in the image's own geometry;
- :mod:`~cxr_desktop.screening.scope`: the per-image input check hook (``scope_check``);
- :mod:`~cxr_desktop.screening.store`: where the app keeps results per (folder, model).

Import the submodules directly; this package imports nothing heavy (torch loads with the runner).
"""
