"""Params files and -p overrides a user gets wrong: each refused with one line naming the file/parameter,
the line where it can, and the fix; through a real process the refusal is that line and exit 2."""
import pytest
from procs import fault_node

from isaac_perf.core.params_yaml import (
    ParamsFileError,
    check_override_args,
    params_file_args,
    read_params_file,
    unknown_names,
)

BAD_FILES = [
    ('a: [\n', 'is not valid YAML at line 2'),
    ('node:\n  ros__parameters: 5\n', 'node.ros__parameters is an int (5)'),
    ('node:\n  ros__parameters:\n    rate: [1, "a"]\n', "parameter 'rate' mixes types"),
    ('node:\n  ros__parameters:\n    rate: [1, 2.5]\n', "parameter 'rate' mixes integers and floats"),
    ('node:\n  ros__parameters:\n    rate:\n', "parameter 'rate' has no value"),
    ('node:\n  ros__parameters:\n    rate: [[1], [2]]\n', 'is a list of lists'),
    ('node: 5\n', "'node' is an int (5), not a mapping"),
    ('- a\n- b\n', 'holds a list, not a mapping'),
    ('node:\n  ros__parameters: {a: 1}\n  extra: 2\n', 'has extra beside ros__parameters'),
    ('node:\n  ros__parameters: {a: 1}\n\tb: 2\n', 'is not valid YAML'),
]


@pytest.mark.parametrize(('text', 'words'), BAD_FILES)
def test_bad_params_file_is_refused_with_the_reason(tmp_path, text, words):
    path = tmp_path / 'p.yaml'
    path.write_text(text)
    with pytest.raises(ParamsFileError) as info:
        read_params_file(path)
    assert words in str(info.value) and str(path) in str(info.value)
    assert '\n' not in str(info.value)


def test_binary_missing_and_folder_params_files(tmp_path):
    binary = tmp_path / 'b.yaml'
    binary.write_bytes(b'\xff\xfe\x00\x01' * 10)
    for path, words in [(binary, 'not UTF-8 text'), (tmp_path / 'none.yaml', 'does not exist'),
                        (tmp_path, 'is a folder')]:
        with pytest.raises(ParamsFileError, match=words):
            read_params_file(path)


def test_good_file_nested_namespaces_and_dotted_names(tmp_path):
    path = tmp_path / 'p.yaml'
    path.write_text('/**:\n  ros__parameters: {a: 1}\nns:\n  node:\n    ros__parameters:\n'
                    '      qos_overrides: {/t: {depth: 5}}\n      rates: [1.0, 2.0]\n')
    assert read_params_file(path) == {'/**': {'a': 1},
                                      'ns/node': {'qos_overrides./t.depth': 5, 'rates': [1.0, 2.0]}}


@pytest.mark.parametrize(('argv', 'words'), [
    (['--ros-args', '-p', 'rate:='], "parameter 'rate' has no value"),
    (['--ros-args', '-p', 'rate'], 'is not name:=value'),
    (['--ros-args', '-p', 'topics:=[1,'], 'is not valid YAML'),
    (['--ros-args', '-p', 'topics:=[1, a]'], 'mixes types'),
])
def test_bad_override_rules_are_refused(argv, words):
    with pytest.raises(ParamsFileError, match=words):
        check_override_args(argv)


def test_overrides_outside_ros_args_are_not_ours_to_check():
    check_override_args(['-p', 'rate:=', '--ros-args', '-p', 'rate:=2.0', '--', '-p', 'x:='])
    assert params_file_args(['--params-file', 'a', '--ros-args', '--params-file', 'b.yaml']) == ['b.yaml']


def test_unknown_names_suggest_the_closest_declared_one():
    assert unknown_names(['max_batch', 'rate_hz', 'qos_overrides./t.depth', 'zzz'],
                         ['max_batch_size', 'rate_hz']) == ["'max_batch' (did you mean 'max_batch_size'?)",
                                                            "'zzz'"]


@pytest.mark.parametrize(('text', 'words'), [
    ('fault_node:\n  ros__parameters: 5\n', 'fault_node.ros__parameters is an int (5)'),
    ('fault_node: [\n', 'is not valid YAML'),
])
def test_bad_params_file_through_a_node_is_one_line_exit_2(tmp_path, text, words):
    path = tmp_path / 'bad.yaml'
    path.write_text(text)
    proc = fault_node(ros_args=('--params-file', str(path)))
    code = proc.wait(60)
    lines = [line for line in ''.join(proc.stderr).splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and words in lines[0] and 'cannot start' in lines[0], proc.output
    assert 'Traceback' not in proc.output


def test_unknown_key_in_params_file_is_warned_and_the_node_runs(tmp_path):
    path = tmp_path / 'typo.yaml'
    path.write_text('fault_node:\n  ros__parameters:\n    destroy_sec: 1.0\n')
    proc = fault_node(ros_args=('--params-file', str(path)))
    try:
        assert proc.wait_for('fault_node ready'), proc.output
        assert proc.wait_for("does not declare, ignored: 'destroy_sec' (did you mean 'destroy_s'?)", 10)
        assert proc.proc.poll() is None  # still running
    finally:
        proc.kill()


@pytest.mark.parametrize(('text', 'words'), [
    ('inference_node:\n  ros__parameters: 5\n', 'inference_node.ros__parameters is an int (5)'),
    ('inference_node: [\n', 'is not valid YAML'),
])
def test_isaac_perf_run_refuses_a_bad_config_in_one_line(tmp_path, capsys, text, words):
    from isaac_perf import cli
    path = tmp_path / 'bad.yaml'
    path.write_text(text)
    assert cli.main(['run', '--config', str(path), '--quiet']) == 2
    err = capsys.readouterr().err
    assert words in err and 'Traceback' not in err, err


def test_isaac_perf_run_warns_of_unknown_keys(tmp_path, capsys):
    from isaac_perf import cli
    path = tmp_path / 'typo.yaml'
    path.write_text('image_source:\n  ros__parameters:\n    camera_count: 1000\n    rate_hzz: 5.0\n')
    assert cli.main(['run', '--config', str(path), '--quiet']) == 2  # camera_count refused first
    err = capsys.readouterr().err
    assert "image_source does not declare 'rate_hzz' (did you mean 'rate_hz'?)" in err, err


def test_launch_ros_temporary_params_files_are_read(tmp_path):
    """launch_ros writes list parameters as !!python/tuple; rcl reads them, so must we (found under the
    real ros2 launch: every node refused its params file)."""
    path = tmp_path / 'launch_params_x'
    path.write_text("/**:\n  ros__parameters:\n    camera_topics: !!python/tuple\n    - /camera_0/image_raw\n"
                    "    rate_hz: 5.0\n")
    assert read_params_file(path) == {'/**': {'camera_topics': ['/camera_0/image_raw'], 'rate_hz': 5.0}}


def test_unwritable_model_cache_names_isaac_perf_cache(monkeypatch, tmp_path):
    """Item 10: an unwritable cache gave "[Errno 2] ... '/proc/...'" without naming ISAAC_PERF_CACHE."""
    from isaac_perf.core.inference.engines.base import EngineError
    from isaac_perf.core.inference.node_params import model_path
    monkeypatch.setenv('ISAAC_PERF_CACHE', '/proc/isaac_perf_cache')
    with pytest.raises(EngineError, match='set ISAAC_PERF_CACHE to a writable folder'):
        model_path({'model': 'detector', 'model_file_path': '', 'input_width': 64, 'input_height': 64})



@pytest.mark.parametrize(('damage', 'why'), [
    ('truncate', 'its size does not match the sidecar (truncated or replaced)'),
    ('flip', 'its checksum does not match the sidecar (corrupt or replaced)'),
    ('no_sidecar', 'its metadata sidecar is missing'),
])
def test_damaged_cached_model_is_rebuilt_with_one_warning(tmp_path, caplog, damage, why):
    """Item 10: a truncated cached model was trusted (the cache looked only at the file name)."""
    onnx = pytest.importorskip('onnx')
    from isaac_perf.core.inference.models import resolve_model
    path = resolve_model('detector', cache_dir=tmp_path, height=64, width=64, num_classes=2)
    good = path.read_bytes()
    if damage == 'truncate':
        path.write_bytes(good[:len(good) // 2])
    elif damage == 'flip':
        path.write_bytes(good[:100] + bytes([good[100] ^ 0xFF]) + good[101:])
    else:
        (tmp_path / (path.name + '.json')).unlink()
    with caplog.at_level('WARNING', logger='isaac_perf.models'):
        again = resolve_model('detector', cache_dir=tmp_path, height=64, width=64, num_classes=2)
    assert again == path and path.read_bytes() == good
    onnx.checker.check_model(onnx.load(str(path)))
    lines = [r.getMessage() for r in caplog.records if r.name == 'isaac_perf.models']
    assert lines == [f'cached model {path} is not trusted, rebuilding it: {why}']
    caplog.clear()
    with caplog.at_level('WARNING', logger='isaac_perf.models'):  # now whole again: reused, no warning
        mtime = path.stat().st_mtime_ns
        assert resolve_model('detector', cache_dir=tmp_path, height=64, width=64, num_classes=2) == path
    assert path.stat().st_mtime_ns == mtime and not caplog.records


def test_cached_model_built_for_other_parameters_is_not_reused(tmp_path, caplog):
    """The sidecar's key is checked too: a file renamed into another model's name is rebuilt."""
    from isaac_perf.core.inference.models import build_detector
    a = build_detector(64, 64, num_classes=2, cache_dir=tmp_path)
    b = build_detector(64, 64, num_classes=3, cache_dir=tmp_path)
    b_bytes = b.read_bytes()
    for suffix in ('', '.json'):
        (tmp_path / (b.name + suffix)).write_bytes((tmp_path / (a.name + suffix)).read_bytes())
    with caplog.at_level('WARNING', logger='isaac_perf.models'):
        assert build_detector(64, 64, num_classes=3, cache_dir=tmp_path) == b
    assert b.read_bytes() == b_bytes
    assert 'it was built for num_classes=2, not 3' in caplog.text


def _model_with_inputs(path, inputs):
    onnx = pytest.importorskip('onnx')
    from onnx import helper
    graph = helper.make_graph(
        [helper.make_node('Identity', [inputs[0][0]], ['out'])], 'g',
        [helper.make_tensor_value_info(name, dtype, [1, 3, 32, 32]) for name, dtype in inputs],
        [helper.make_tensor_value_info('out', inputs[0][1], [1, 3, 32, 32])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid('', 17)]), str(path))
    return str(path)


@pytest.mark.parametrize(('inputs', 'words'), [
    ([('image', 7)], "input 'image' is int64: the inference node feeds normalised float32/float16 images"),
    ([('image', 1), ('extra', 1)], "the model has 2 inputs ('image', 'extra')"),
])
def test_models_the_node_cannot_feed_are_refused_at_load(tmp_path, inputs, words):
    """Item 10: an int64 image input ran on truncated values; a model needing a second input loaded and
    then failed every frame."""
    pytest.importorskip('onnxruntime')
    from isaac_perf.core.inference.engines.base import EngineError, EngineOptions
    from isaac_perf.core.inference.engines.factory import create_engine
    from isaac_perf.core.inference.runner import InferenceRunner
    engine = create_engine('onnxruntime', _model_with_inputs(tmp_path / 'm.onnx', inputs),
                           EngineOptions(device='cpu'))
    try:
        with pytest.raises(EngineError, match=words.replace('(', r'\(').replace(')', r'\)')):
            InferenceRunner(engine, task='classification')
    finally:
        engine.close()
