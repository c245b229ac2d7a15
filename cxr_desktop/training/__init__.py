"""Training (no Qt): fine-tune the ResNet50 classifier on a folder with one subfolder per class.

The one entry point is :func:`cxr_desktop.training.engine.train`, a generator of typed
progress events (:mod:`~cxr_desktop.training.events`) driven identically by ``cxr-train``
and the training wizard. Modules:

- :mod:`~cxr_desktop.training.config` - :class:`TrainConfig`, :class:`TrainingError`
- :mod:`~cxr_desktop.training.scan` - folder scan: classes, unreadable files, duplicates, patient groups
- :mod:`~cxr_desktop.training.split` - stratified patient-level split
- :mod:`~cxr_desktop.training.data` - decode-once image cache, augmentation, datasets
- :mod:`~cxr_desktop.training.loops` - ``train_one_epoch`` / ``evaluate`` and stage set-up
- :mod:`~cxr_desktop.training.checkpoint` - atomic, pickle-free checkpoints and resume
- :mod:`~cxr_desktop.training.metrics` - metrics, bootstrap CIs, threshold selection (numpy)
- :mod:`~cxr_desktop.training.ood` - input-safety feature statistics stored in the model file
- :mod:`~cxr_desktop.training.results`, :mod:`~cxr_desktop.training.report` - evaluation, HTML report
- :mod:`~cxr_desktop.training.synthetic` - synthetic opacities for the demonstration model and tests

Nothing is imported here, so ``import cxr_desktop.training.scan`` stays free of torch.
"""
