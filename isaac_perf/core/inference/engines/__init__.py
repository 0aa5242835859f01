"""Inference engines behind one interface: ONNX Runtime (default), PyTorch/CUDA, TensorRT; the factory and
the on-disk artefact cache.
"""
