"""`image_source`: publishes sensor_msgs/Image for one or more cameras at a fixed rate, stamped now.

Frames come from `isaac_perf.core.inference.frames` (a moving synthetic pattern, or an image folder, a video
or an MCAP rosbag played back from memory). Each camera is an `isaac_perf.ros.frame_transport.FramePublisher`:
a frame costs one copy into a shared-memory slot for zero-copy readers (isaac_perf's nodes; descriptors on
`<topic>/zero_copy`), plus one copy and a serialization into a plain sensor_msgs/Image only while something
subscribes `<topic>` itself (`ros2 topic hz`, a viewer, rosbag). `zero_copy: false` publishes plain only.
All cameras are published on one timer tick with one shared stamp, like a synchronised camera rig, which
is what a batching consumer wants.

The timer is rcl's: each period is scheduled from the previous *scheduled* time, not from when the
callback ran, so the rate does not drift; ticks that come too late are skipped by rcl and counted here as
`missed_ticks` (the node publishes fewer frames rather than bursts).
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rclpy.node import Node

from isaac_perf.core.inference.frames import (
    SOURCE_ENCODINGS,
    SOURCE_KINDS,
    FrameSource,
    FrameSourceError,
    open_source,
)
from isaac_perf.core.inference.health import source_summary
from isaac_perf.core.params import ParamSpec
from isaac_perf.core.pipeline_graph import camera_topics
from isaac_perf.core.telemetry.health import Status
from isaac_perf.core.transport.params import ZERO_COPY_WRITER, publish_threads
from isaac_perf.ros.diagnostics import Updater
from isaac_perf.ros.frame_transport import FramePublisher, publisher_totals
from isaac_perf.ros.node_main import run_node
from isaac_perf.ros.params import declare_params
from isaac_perf.ros.qos import qos_from_name

NODE_NAME = 'image_source'
RELIABILITY = ('best_effort', 'reliable')


def _topic_pattern_ok(value: str) -> str:
    return '' if value.strip() else 'topic_pattern is empty: give a pattern such as /camera_{i}/image_raw'


PARAMS: tuple[ParamSpec, ...] = (
    ParamSpec('camera_count', 1, 'Number of cameras to publish (ignored when camera_topics is set).',
              min=1, max=64),
    # [''] rather than []: rclpy cannot give an empty list a type; '' entries are ignored.
    ParamSpec('camera_topics', [''], 'Explicit Image topics, one per camera; empty = topic_pattern '
              'with {i} = 0..camera_count-1.'),
    ParamSpec('topic_pattern', '/camera_{i}/image_raw', 'Topic of camera {i} when camera_topics is empty.',
              check=_topic_pattern_ok),
    ParamSpec('rate_hz', 30.0, 'Frames per second per camera.', min=0.1, max=1000.0),
    ParamSpec('width', 640, 'Published image width in pixels (played-back frames are resized).',
              min=8, max=8192),
    ParamSpec('height', 480, 'Published image height in pixels.', min=8, max=8192),
    ParamSpec('encoding', 'rgb8', 'Pixel encoding of the published images.', choices=SOURCE_ENCODINGS),
    ParamSpec('source', 'synthetic', 'Where frames come from.', choices=SOURCE_KINDS),
    ParamSpec('source_path', '', 'Image folder, video file or MCAP file to play (source != synthetic).'),
    ParamSpec('source_topic', '', 'Image topic to play from the MCAP file; empty = its first Image topic.'),
    ParamSpec('cache_mb', 512.0, 'Memory budget for decoded playback frames; longer recordings play '
              'their first frames only.', min=1.0, max=65536.0),
    ParamSpec('loop', True, 'Loop the frames; false stops after one pass (every frame published once).'),
    ParamSpec('frame_id', 'camera_{i}_optical_frame', 'header.frame_id of camera {i}.'),
    ParamSpec('qos_reliability', 'reliable', 'Publisher reliability. reliable by default: between processes '
              'Fast DDS lost almost every best-effort frame over its 512 KiB shared-memory segment '
              '(640x480 rgb8 and larger; see docs/tuning.md); best_effort suits small frames.',
              choices=RELIABILITY),
    ParamSpec('qos_depth', 1, 'Publisher history depth (keep last N); 1 keeps a slow reader on the newest '
              'frame instead of a queue of stale ones.', min=1, max=1000),
    *ZERO_COPY_WRITER,
    ParamSpec('publish_threads', 0, 'Threads that copy and publish the cameras of one tick in parallel (the '
              'copy releases the GIL): with 8 cameras at 1080p one thread put the last camera 4 ms behind '
              'the shared stamp. 0 = one per camera, at most half the CPU cores; 1 = every camera in the '
              'timer callback, one after another.', min=0, max=64, read_only=True),
    ParamSpec('diagnostics_period_s', 1.0, 'Period of the /diagnostics status of this node.',
              min=0.1, max=60.0),
)

# Which parameters rebuild what when changed at run time.
_SOURCE_KEYS = {'width', 'height', 'encoding', 'source', 'source_path', 'source_topic', 'cache_mb'}
_PUBLISHER_KEYS = {'camera_count', 'camera_topics', 'topic_pattern', 'qos_reliability', 'qos_depth',
                   'frame_id', 'zero_copy', 'zero_copy_slots'}


def _cross_check(current: dict[str, Any], changes: dict[str, Any]) -> list[str]:
    values = {**current, **changes}
    errors = []
    topics = camera_topics(values)
    if len(set(topics)) != len(topics):
        errors.append(f'camera topics are not distinct: {topics} (topic_pattern needs {{i}} when '
                      'camera_count > 1)')
    if values['source'] != 'synthetic':
        path = values['source_path']
        if not path:
            errors.append(f"source={values['source']} needs source_path")
        elif not Path(path).expanduser().exists():
            errors.append(f'source_path {path!r} does not exist')
    return errors


@dataclass
class _Camera:
    topic: str
    frame_id: str
    publisher: FramePublisher
    phase: int  # frame offset so cameras sharing one playback source show different frames
    source: FrameSource


class ImageSource(Node):
    """Publishes stamped frames for `camera_count` cameras at `rate_hz`."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(kwargs.pop('node_name', NODE_NAME), **kwargs)
        self._sources: list[FrameSource] = []  # first: destroy_node() closes them, even half-built
        self._pool: ThreadPoolExecutor | None = None
        self._cameras: list[_Camera] = []
        self._values: dict[str, Any] = {}
        self._values = declare_params(self, PARAMS, on_change=self._on_change,
                                      extra_check=lambda changes: _cross_check(self._values, changes))
        self.frames_published = 0
        self.ticks = 0
        self.missed_ticks = 0
        self.source_error = ''
        self._index = 0
        self._first_tick_ns = 0
        self._timer = None
        threads = publish_threads(self._values['publish_threads'], len(camera_topics(self._values)))
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix='image_source') if threads > 1 else None
        self._open_sources()
        self._create_publishers()
        self._start_timer()
        self._diagnostics = self._create_updater()
        self.get_logger().info(
            f'publishing {len(self._cameras)} camera(s) {[c.topic for c in self._cameras]} at '
            f"{self._values['rate_hz']:g} Hz, {self._values['width']}x{self._values['height']} "
            f"{self._values['encoding']}, source={self._values['source']}")

    @property
    def camera_count(self) -> int:
        return len(self._cameras)

    # -- set-up -------------------------------------------------------------------------------------

    def _open_sources(self) -> None:
        for source in self._sources:
            source.close()
        self._sources = []
        v = self._values
        count = len(camera_topics(v))
        log = self.get_logger().warning
        try:
            if v['source'] == 'synthetic':
                # One source per camera, each tinted differently: the canvases are small.
                self._sources = [open_source('synthetic', v['width'], v['height'], v['encoding'], seed=i)
                                 for i in range(count)]
            else:
                # Playback frames are shared by every camera (decoded once), offset per camera.
                self._sources = [open_source(v['source'], v['width'], v['height'], v['encoding'],
                                             path=str(Path(v['source_path']).expanduser()),
                                             topic=v['source_topic'], cache_mb=v['cache_mb'], log=log)]
            self.source_error = ''
        except FrameSourceError as exc:
            self.source_error = str(exc)
            self.get_logger().error(f'cannot open frame source: {exc}; publishing nothing until '
                                    'the source parameters are fixed')

    def _create_publishers(self) -> None:
        for camera in self._cameras:
            camera.publisher.destroy()
        self._cameras = []
        if not self._sources:
            return
        v = self._values
        qos = qos_from_name(f"SENSOR_DATA,{v['qos_reliability']}", v['qos_depth'])
        topics = camera_topics(v)
        shared = len(self._sources) == 1
        period = len(self._sources[0])
        for i, topic in enumerate(topics):
            self._cameras.append(_Camera(
                topic=topic, frame_id=v['frame_id'].replace('{i}', str(i)),
                publisher=FramePublisher(self, topic, qos, zero_copy=v['zero_copy'],
                                         slots=v['zero_copy_slots']),
                phase=(i * period) // len(topics) if shared else 0,
                source=self._sources[0] if shared else self._sources[i]))

    def _start_timer(self) -> None:
        if self._timer is not None:
            self.destroy_timer(self._timer)
        self._period_ns = int(round(1e9 / self._values['rate_hz']))
        self._first_tick_ns = 0
        self._last_period = 0
        self._timer = self.create_timer(self._period_ns / 1e9, self._on_tick)

    def _on_change(self, changes: dict[str, Any]) -> None:
        self._values.update(changes)
        keys = set(changes)
        if keys & _SOURCE_KEYS or (keys & {'camera_count', 'camera_topics', 'topic_pattern'}
                                   and self._values['source'] == 'synthetic'):
            self._open_sources()
            self._index = 0
        if keys & (_SOURCE_KEYS | _PUBLISHER_KEYS):
            self._create_publishers()
        if 'rate_hz' in keys or 'loop' in keys:
            self._start_timer()
        if 'diagnostics_period_s' in keys:
            self._diagnostics.destroy()
            self._diagnostics = self._create_updater()
        self.get_logger().info(f'parameters changed: {sorted(keys)}')

    # -- publishing ---------------------------------------------------------------------------------

    def _on_tick(self) -> None:
        now = self.get_clock().now()
        now_ns = now.nanoseconds
        if self._first_tick_ns == 0:
            self._first_tick_ns = now_ns
            self._last_period = 0
        else:
            # rcl skips ticks it could not run in time; count them so an overloaded host shows up.
            period_no = (now_ns - self._first_tick_ns + self._period_ns // 2) // self._period_ns
            self.missed_ticks += max(0, period_no - self._last_period - 1)
            self._last_period = max(period_no, self._last_period + 1)
        if not self._cameras:
            return
        if not self._values['loop'] and self._index >= len(self._cameras[0].source):
            if not self._timer.is_canceled():
                self.get_logger().info(f'played all {self._index} frames once (loop is false): stopping')
                self._timer.cancel()  # not destroyed: this callback is still using it
            return
        stamp = now.to_msg()
        encoding = self._values['encoding']
        index = self._index

        def publish(camera: _Camera) -> None:
            frame = camera.source.frame(index + camera.phase)
            camera.publisher.publish(frame, encoding, stamp, camera.frame_id)

        if self._pool is not None and len(self._cameras) > 1:
            for done in [self._pool.submit(publish, camera) for camera in self._cameras]:
                done.result()  # every camera of this tick is out before the next tick (or a change) runs
        else:
            for camera in self._cameras:
                publish(camera)
        self.frames_published += len(self._cameras)
        self._index += 1
        self.ticks += 1

    # -- diagnostics --------------------------------------------------------------------------------

    def _create_updater(self) -> Updater:
        updater = Updater(self, self._values['diagnostics_period_s'],
                          hardware_id=self.get_fully_qualified_name())
        updater.add('frames', self._diagnose)
        return updater

    def _diagnose(self, status: Status) -> None:
        source_summary(status, self.source_error, len(self._cameras))
        status.update({
            'frames_published': self.frames_published, 'ticks': self.ticks, 'missed_ticks': self.missed_ticks,
            'expected_frequency': str(self._values['rate_hz']), 'source': self._values['source'],
            'topics': ','.join(c.topic for c in self._cameras),
        })
        status.update({k: str(v) for k, v in publisher_totals([c.publisher for c in self._cameras]).items()})

    def destroy_node(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
        for camera in self._cameras:
            camera.publisher.destroy()  # unlinks the shared-memory segments
        self._cameras = []
        for source in self._sources:
            source.close()
        super().destroy_node()


def main(args: list[str] | None = None) -> None:
    run_node(ImageSource, args)


if __name__ == '__main__':
    main()
