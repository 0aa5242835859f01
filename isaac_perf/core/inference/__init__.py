"""Inference: frames and encodings, pre/post-processing, the built-in models, the runner (preprocess ->
engine -> postprocess) and the engines (ONNX Runtime, PyTorch/CUDA, TensorRT).
"""
