"""The optimisation practices the profiler report recommends, and how each applies in this stack."""

# The seed chapter's "Performance Optimization Best Practices" catalogue: practice -> (category, description).
_MM, _GPU, _PIPE, _MODEL = 'memory_management', 'gpu_utilization', 'pipeline_design', 'model_optimization'
BEST_PRACTICES: dict[str, tuple[str, str]] = {
    'Pre-allocate memory pools': (_MM, 'Pre-allocate GPU memory pools to avoid allocation overhead'),
    'Use pinned memory for host transfers': (_MM, 'Pinned memory enables faster CPU-GPU transfers'),
    'Minimize memory copies': (_MM, 'Avoid unnecessary memory copies between CPU and GPU'),
    'Batch operations when possible': (_MM, 'Process multiple items together to maximize throughput'),
    'Maximize occupancy': (_GPU, 'Ensure GPU compute units are fully utilized'),
    'Optimize memory bandwidth': (_GPU, 'Maximize memory throughput to feed compute units'),
    'Use TensorRT optimizations': (_GPU, 'Leverage TensorRT for maximum inference performance'),
    'Profile and optimize hotspots': (_GPU, 'Identify and optimize the most time-consuming operations'),
    'Overlap computation and I/O': (_PIPE, 'Hide I/O latency with computation'),
    'Minimize synchronization points': (_PIPE, 'Reduce CPU-GPU synchronization overhead'),
    'Optimize pipeline depth': (_PIPE, 'Balance latency and throughput requirements'),
    'Use appropriate QoS settings': (_PIPE, 'Configure ROS 2 QoS for performance requirements'),
    'Quantize models when accuracy allows': (_MODEL, 'Use INT8 or FP16 for significant speedup'),
    'Prune unnecessary weights': (_MODEL, 'Remove weights with minimal impact on accuracy'),
    'Use model distillation': (_MODEL, 'Train smaller, faster student models'),
    'Optimize for target hardware': (_MODEL, 'Tailor models for specific GPU architectures'),
}

# How each practice is applied in this stack (the seed's own "implementation" lines name pycuda tools).
ACTIONS: dict[str, str] = {
    'Pre-allocate memory pools': 'reuse preallocated input/output buffers (isaac_perf.core.cuda memory '
                                 'pools; torch caching allocator) instead of allocating per frame',
    'Use pinned memory for host transfers': 'stage host->device copies through pinned (page-locked) buffers '
                                            'and copy with non_blocking=True',
    'Minimize memory copies': 'upload the uint8 image once and do resize/normalize/layout on the GPU; build '
                              'arrays with np.frombuffer on the message data (zero-copy) instead of copying',
    'Batch operations when possible': 'batch frames/cameras (stream_batcher max_batch_size, '
                                      'max_queue_delay_ms)',
    'Maximize occupancy': 'raise the batch size until GPU utilisation stops rising',
    'Optimize memory bandwidth': 'fuse elementwise preprocessing into one kernel; keep tensors contiguous',
    'Use TensorRT optimizations': 'run the engine with backend=tensorrt (or torch with precision=fp16); '
                                  'enable cuda_graphs to remove per-layer launch overhead',
    'Profile and optimize hotspots': 'capture with `nsys profile -t cuda,nvtx` and sample the node with '
                                     '`isaac-perf report --py-spy PID`; optimise the named function',
    'Overlap computation and I/O': 'use several CUDA streams and double buffering (stream_batcher '
                                   'num_streams) so copies overlap kernels',
    'Minimize synchronization points': 'synchronise on CUDA events at the end of the frame only; capture the '
                                       'engine in a CUDA graph (cuda_graphs=true)',
    'Optimize pipeline depth': 'tune queue depth and the number of in-flight frames (qos_tuner does it '
                               'against a latency budget)',
    'Use appropriate QoS settings': 'best-effort, keep-last depth 1-2 for camera topics; avoid large '
                                    'reliable queues on the hot path',
    'Quantize models when accuracy allows': 'precision=fp16 (or int8 with TensorRT calibration) after '
                                            'checking accuracy against the FP32 reference',
    'Prune unnecessary weights': 'prune and re-export the model; re-check accuracy',
    'Use model distillation': 'train a smaller student model for this task',
    'Optimize for target hardware': 'build the engine on the target GPU (engines are cached per GPU/version)',
}

# Where a practice means something specific for a kind of stage, say that instead of the generic action.
KIND_ACTIONS: dict[tuple[str, str], str] = {
    ('Minimize memory copies', 'postprocess'): 'decode and NMS on the GPU (decode_detections_torch) and copy '
                                               'only the kept boxes to the host; cap pre_nms_top_k',
    ('Batch operations when possible', 'postprocess'): 'run NMS for the whole batch in one call instead of '
                                                       'per frame and per class',
    ('Minimize memory copies', 'conversion'): 'view the message buffer with np.frombuffer (zero-copy) '
                                              'instead of copying it into a new array',
    ('Minimize memory copies', 'publish'): 'publish fewer bytes: results instead of tensors, compact '
                                           'layouts; keep large payloads in one process',
    ('Batch operations when possible', 'inference'): 'raise max_batch_size (inference_node) or batch '
                                                     'cameras with stream_batcher',
}

# Which practices answer which measured cause, per kind of stage (first = most direct).
TIME_SHARE_PRACTICES: dict[str, tuple[str, ...]] = {
    'inference': ('Use TensorRT optimizations', 'Quantize models when accuracy allows',
                  'Batch operations when possible'),
    'preprocess': ('Minimize memory copies', 'Optimize memory bandwidth'),
    'transfer': ('Use pinned memory for host transfers', 'Overlap computation and I/O'),
    'conversion': ('Minimize memory copies',),
    'postprocess': ('Minimize memory copies', 'Batch operations when possible'),
    'publish': ('Use appropriate QoS settings', 'Minimize memory copies'),
    'batching': ('Optimize pipeline depth',),
    'other': ('Profile and optimize hotspots',),
}
