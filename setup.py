"""ament_python setup for isaac_perf (works under colcon and under plain pip)."""
from glob import glob

from setuptools import find_packages, setup

PACKAGE = 'isaac_perf'

NODES = {
    'perf_monitor': 'isaac_perf.nodes.perf_monitor:main',
    'inference_node': 'isaac_perf.nodes.inference:main',
    'stream_batcher': 'isaac_perf.nodes.stream_batcher:main',
    'qos_tuner': 'isaac_perf.nodes.qos_tuner:main',
    'image_source': 'isaac_perf.nodes.image_source:main',
}

# What the nodes and `isaac-perf` need at run time, so `pip install .` gives working console scripts.
# Ranges here; the exact versions CI and the Makefile use are pinned in requirements/*.txt. The ROS 2 side
# (rclpy, message packages) is not listed: under colcon it comes from the ROS install (package.xml), under pip
# from the ROS 2 wheels (requirements/ros-<distro>.txt), whose names differ from the colcon ones.
INSTALL_REQUIRES = [
    'numpy>=1.24',
    'psutil>=5.9',
    'PyYAML>=6.0',
    'nvidia-ml-py>=12.535',  # imports as pynvml; no GPU gives NA readings, not an error
    'onnx>=1.15',
    'onnxruntime>=1.17',  # the default engine, CPU everywhere
    'rich>=13.0',  # `isaac-perf run` / `isaac-perf top` live views
]

EXTRAS = {
    'torch': ['torch>=2.2'],
    'tensorrt': ['onnxconverter-common>=1.14', 'tqdm>=4.66'],  # TensorRT itself: NVIDIA's wheels
    'fp16': ['onnxconverter-common>=1.14'],
    'plots': ['matplotlib>=3.7'],
    'playback': ['mcap>=1.1', 'mcap-ros2-support>=0.5', 'opencv-python-headless>=4.8'],
    'profiling': ['nvtx>=0.2.8', 'py-spy>=0.3.14'],
}
EXTRAS['all'] = sorted({r for reqs in EXTRAS.values() for r in reqs})

setup(
    name=PACKAGE,
    version='0.1.0',
    packages=find_packages(exclude=['test', 'test.*']),
    data_files=[
        ('share/ament_index/resource_index/packages', [f'resource/{PACKAGE}']),
        (f'share/{PACKAGE}', ['package.xml']),
        (f'share/{PACKAGE}/launch', glob('launch/*.py')),
        (f'share/{PACKAGE}/config', glob('config/*.yaml') + glob('config/*.xml')),
    ],
    install_requires=['setuptools'] + INSTALL_REQUIRES,
    extras_require=EXTRAS,
    python_requires='>=3.10',
    zip_safe=True,
    maintainer='isaac_perf maintainers',
    maintainer_email='maintainers@isaac-perf.dev',
    description='Measure, run and tune GPU perception pipelines on ROS 2.',
    license='Apache-2.0',
    entry_points={
        'console_scripts': [f'{name} = {target}' for name, target in NODES.items()]
        + ['isaac-perf = isaac_perf.cli:main'],
    },
)
