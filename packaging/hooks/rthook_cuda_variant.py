"""Runtime hook of the full CUDA bundle: record the variant for the self-test and About box."""

import os

os.environ["CXR_BUNDLE_VARIANT"] = "cuda"
