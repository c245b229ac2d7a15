"""CXR Review: chest X-ray review with a ResNet50 decision aid and Grad-CAM.

The core (imaging, model, inference, screening, training) never imports Qt, so it
runs headless; the Qt layer lives in :mod:`cxr_desktop.gui`.
"""

__version__ = "0.1.0"

DECISION_AID_NOTICE = (
    "Decision aid only - not a diagnosis. A qualified reader must review every image."
)
