"""The pipeline graphs (nodes, parameters, topic wiring) that launch files and `isaac-perf run` share."""
from isaac_perf.core import pipeline_graph as graph
from isaac_perf.core.paths import config_file


def test_topic_rules():
    assert graph.camera_topics({'camera_topics': [''], 'topic_pattern': '/cam{i}', 'camera_count': 2}) == \
        ['/cam0', '/cam1']
    assert graph.camera_topics({'camera_topics': ['/a', ''], 'topic_pattern': 'x', 'camera_count': 5}) == \
        ['/a']
    assert graph.output_topics({'input_topics': ['/a/', '/b'], 'output_topic': ''}) == \
        ['/a/detections', '/b/detections']
    assert graph.output_topics({'input_topics': ['/a', '/b'], 'output_topic': '/r{i}'}) == ['/r0', '/r1']


def test_coerce_follows_the_reference_types():
    out = graph.coerce({'rate_hz': 30, 'rates': [1, 2], 'count': 3, 'flag': True, 'other': 1},
                       {'rate_hz': 1.0, 'rates': [0.0], 'count': 1, 'flag': 1.0})
    assert out == {'rate_hz': 30.0, 'rates': [1.0, 2.0], 'count': 3, 'flag': True, 'other': 1}
    assert isinstance(out['rate_hz'], float) and isinstance(out['count'], int)


def test_pipeline_nodes_carry_the_wired_parameters(tmp_path):
    custom = tmp_path / 'p.yaml'
    custom.write_text('image_source:\n  ros__parameters:\n    camera_count: 2\n    rate_hz: 20\n'
                      'perf_monitor:\n  ros__parameters:\n    watched_topics: [/extra]\n')
    params = graph.pipeline_params(custom)
    assert params['image_source']['rate_hz'] == 20.0 and isinstance(params['image_source']['rate_hz'], float)
    assert params['inference_node']['input_topics'] == ['/camera_0/image_raw', '/camera_1/image_raw']
    assert params['perf_monitor']['watched_topics'][-1] == '/extra'
    assert params['perf_monitor']['expected_rates_hz'] == [20.0, 20.0, 0.0, 0.0, 0.0]
    assert params['perf_monitor']['watched_topics'][:2] == ['/camera_0/image_raw/zero_copy',
                                                            '/camera_1/image_raw/zero_copy']
    off = graph.pipeline_params(custom, zero_copy=False)
    assert off['image_source']['zero_copy'] is False and off['inference_node']['zero_copy'] is False
    assert off['perf_monitor']['watched_topics'][:2] == ['/camera_0/image_raw', '/camera_1/image_raw']
    nodes = graph.pipeline_nodes(params)
    assert [n.executable for n in nodes] == ['inference_node', 'image_source', 'perf_monitor']
    assert nodes[2].parameters == (params['perf_monitor'],)
    assert [n.name for n in graph.pipeline_nodes(params, use_monitor=False)] == ['inference_node',
                                                                                'image_source']


def test_batcher_graph_subscribes_exactly_the_launched_cameras():
    batcher_file = str(config_file('stream_batcher.yaml'))
    nodes = graph.batcher_nodes(3, 15, 320, 240, batcher_file, str(config_file('perf_monitor.yaml')),
                                {'max_batch_size': 4})
    source, batcher, monitor = nodes
    topics = [f'/camera_{i}/image_raw' for i in range(3)]
    assert source.parameters[0]['camera_count'] == 3 and source.parameters[0]['rate_hz'] == 15.0
    assert batcher.parameters == (batcher_file, {'camera_topics': topics, 'max_batch_size': 4})
    # The monitor reads the cameras by descriptor (zero_copy): a plain watcher would cost the source a copy.
    assert monitor.parameters[1]['watched_topics'] == [f'{t}/zero_copy' for t in topics] + [
        f'{t}/detections' for t in topics]
    plain = graph.batcher_nodes(3, 15, 320, 240, batcher_file, '', {}, zero_copy=False)
    assert plain[0].parameters[0]['zero_copy'] is False
    assert plain[2].parameters[1]['watched_topics'][:3] == topics
    assert monitor.parameters[1]['expected_rates_hz'] == [15.0]
    try:
        graph.batcher_nodes(0, 15, 320, 240, batcher_file, '', {})
    except ValueError as exc:
        assert 'at least one camera' in str(exc)
    else:
        raise AssertionError('0 cameras must be refused')


def test_tuned_graph_applies_a_tuned_file_last_and_only_when_it_exists(tmp_path):
    pipeline, tuner = str(config_file('pipeline.yaml')), str(config_file('qos_tuner.yaml'))
    missing = str(tmp_path / 'none.yaml')
    nodes = graph.tuned_pipeline_nodes(2, 30.0, pipeline, tuner, missing, {'latency_budget_ms': 50.0})
    assert [n.name for n in nodes] == ['image_source', 'stream_batcher', 'perf_monitor', 'qos_tuner']
    cameras = ['/camera_0/image_raw', '/camera_1/image_raw']
    assert nodes[1].parameters == (pipeline, {'camera_topics': cameras, **graph.TUNED_BATCHER})
    tuned = tmp_path / 'tuned.yaml'
    tuned.write_text('/stream_batcher:\n  ros__parameters:\n    max_batch_size: 4\n')
    nodes = graph.tuned_pipeline_nodes(2, 30.0, pipeline, tuner, str(tuned), {})
    assert nodes[1].parameters[-1] == str(tuned)
    tuner_params = nodes[3].parameters[1]
    assert tuner_params['target_node'] == '/stream_batcher' and tuner_params['cameras'] == 2
    # The tuner watches the descriptor topics' QoS: a raw watcher on the plain ones would cost a copy.
    assert tuner_params['watch_topics'] == ['/camera_0/image_raw/zero_copy', '/camera_1/image_raw/zero_copy']
    # Windows from the batcher's own stage reports (only frames captured after a change count), and every
    # batch size / stream count the tuner may set is warmed at load: no engine reload while tuning.
    assert tuner_params['window_source'] == 'stage_times'
    assert nodes[1].parameters[1]['graph_streams'] >= tuner_params['num_streams_max']
