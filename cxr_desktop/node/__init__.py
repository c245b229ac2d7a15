"""The DICOM node behind ``cxr-node``: receive pushed studies, screen each complete study, send results back.

Qt-free. :mod:`.storage` keeps received objects on disk under hashed names,
:mod:`.tracker` decides when a study is complete, :mod:`.scp` is the pynetdicom
C-STORE / Verification SCP, :mod:`.worklist` screens a study with the same runner,
scope gate and journal as ``cxr-screen`` and keeps the node-wide worklist, and
:mod:`.service` ties them together (restart re-queueing, clean stop).
"""
