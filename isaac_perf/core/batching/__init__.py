"""Batching: the dynamic batcher, the K-stream scheduler, multi-GPU routing and placement, the batch
compute step and the whole multi-camera pipeline.
"""
