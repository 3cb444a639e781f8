"""narformer-tvm: predict neural-network latency from the ONNX graph (NAR-Former V2)."""
__version__ = "0.1.0"
