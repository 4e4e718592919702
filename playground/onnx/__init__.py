"""ONNX exports (optimum, quantization) and the onnxruntime sessions that run them."""
