"""Plug-ins shipped with narformer-tvm, registered through entry points in pyproject.toml:
runtimes for the profiler (``ort``, ``tvm_runtime``). Third parties add their own the same way."""
