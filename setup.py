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
    install_requires=['setuptools'],
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
