"""Runtime hook of the trimmed CPU bundle: hide GPUs before torch is imported.

The cpu variant leaves out the cuDNN engines, cuSOLVER and triton, which torch would load
on a GPU run; hiding the GPUs makes the app choose the CPU (ONNX Runtime) path on every
machine, instead of failing half-way through the first convolution on one with a GPU.
"""

import os

os.environ["CXR_BUNDLE_VARIANT"] = "cpu"
os.environ["CUDA_VISIBLE_DEVICES"] = ""
