"""Generate config/pipeline.yaml from the nodes' ParamSpec tables (run from the repo root)."""
import textwrap

import yaml

from isaac_perf.nodes import image_source, inference, perf_monitor

OVERRIDES = {
    'inference_node': {'input_qos': 'SENSOR_DATA,reliable'},
    'perf_monitor': {
        'watched_topics': ['/camera_0/image_raw/zero_copy', '/camera_0/image_raw/detections'],
        'expected_rates_hz': [30.0, 0.0],
        'process_patterns': ['isaac-perf', 'perf_monitor', 'inference_node', 'image_source'],
    },
}
NOTES = {
    ('inference_node', 'input_topics'):
        'isaac-perf run and pipeline.launch.py set this to the image_source topics.',
    ('perf_monitor', 'watched_topics'):
        'isaac-perf run and pipeline.launch.py set this to the camera and result topics.',
    ('perf_monitor', 'expected_rates_hz'): 'Set by isaac-perf run / pipeline.launch.py from rate_hz.',
}

def value_text(v):
    text = yaml.safe_dump(v, default_flow_style=True, width=1000).strip()
    return text.removesuffix('\n...').removesuffix('...').strip()

def describe(spec):
    text = spec.description
    if spec.choices:
        text += ' One of: ' + ', '.join(c if c else "'' (empty)" for c in spec.choices) + '.'
    if spec.min is not None or spec.max is not None:
        text += f' Range {spec.min} .. {spec.max}.'
    return text

out = ['# Parameters of every node of the perception pipeline (ROS 2 params-file format):',
       '#   image_source -> inference_node -> <camera topic>/detections, perf_monitor watching.',
       '# Read by launch/pipeline.launch.py (ros2 launch isaac_perf pipeline.launch.py) and by',
       '# `isaac-perf run` (pip installs), which override a few values from their arguments',
       '# (cameras, rate, size, backend, model) and wire the topics between the nodes.',
       '# Reference: docs/pipeline.md (image_source, inference_node) and docs/monitor.md (perf_monitor).']
NODES = (('image_source', image_source), ('inference_node', inference), ('perf_monitor', perf_monitor))
for name, module in NODES:
    out += ['', f'{name}:', '  ros__parameters:']
    for spec in module.PARAMS:
        for line in textwrap.wrap(describe(spec), 104):
            out.append(f'    # {line}')
        note = NOTES.get((name, spec.name))
        if note:
            out.append(f'    # {note}')
        value = OVERRIDES.get(name, {}).get(spec.name, spec.default)
        if isinstance(value, (list, tuple)) and not value:
            out.append(f'    # {spec.name}: []   (a params file cannot hold an empty list)')
            continue
        out.append(f'    {spec.name}: {value_text(list(value) if isinstance(value, tuple) else value)}')
open('config/pipeline.yaml', 'w').write('\n'.join(out) + '\n')
