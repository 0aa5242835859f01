"""`isaac-perf` given bad values: refused when the command line is parsed (exit 2, the option and the
reason named) before any job runs; bad input files refused by name; unwritable outputs found first."""
import json

import pytest

from isaac_perf import cli
from isaac_perf.app.args import output_problem


def refuse(argv, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    return info.value.code, capsys.readouterr().err


@pytest.mark.parametrize(('argv', 'words'), [
    (['run', '--duration', '-5'], 'argument --duration: -5 is below the minimum 0 s'),
    (['run', '--duration', 'nan'], "argument --duration: 'nan' is not a finite number"),
    (['run', '--rate', '0'], 'argument --rate: 0 must be greater than 0 Hz'),
    (['run', '--rate', 'inf'], 'is not a finite number'),
    (['run', '--cameras', '0'], 'argument --cameras: 0 is below the minimum 1'),
    (['run', '--cameras', 'two'], "argument --cameras: 'two' is not an integer"),
    (['run', '--load-timeout', '-1'], 'argument --load-timeout'),
    (['run', '--json', '/proc/x/report.json'], 'argument --json: /proc/x/report.json is on a kernel '),
    (['top', '--timeout', 'nan'], "argument --timeout: 'nan' is not a finite number"),
    (['top', '--period', '0'], 'argument --period: 0 must be greater than 0'),
    (['top', '--metrics-topic', 'a b'], 'argument --metrics-topic: topic \'a b\' is not a valid ROS topic'),
    (['report', 'x.json', '--out', '/proc/x'], 'argument --out: /proc/x is on a kernel filesystem'),
    (['report', 'x.json', '--share', '2'], 'argument --share: 2 is above the maximum 1'),
])
def test_bad_option_refused_at_parse_time(capsys, argv, words):
    code, err = refuse(argv, capsys)
    assert code == 2 and words in err, err


def test_json_into_a_read_only_folder_is_refused_before_the_run(tmp_path, capsys):
    locked = tmp_path / 'locked'
    locked.mkdir(mode=0o500)
    try:
        if output_problem(locked / 'r.json') == '':
            pytest.skip('running as a user who can write anywhere (root)')
        code, err = refuse(['run', '--json', str(locked / 'r.json')], capsys)
        assert code == 2 and 'is not writable by this user' in err
    finally:
        locked.chmod(0o700)


def test_output_problem_cases(tmp_path):
    (tmp_path / 'file').write_text('x')
    assert output_problem(tmp_path / 'new' / 'deeper' / 'r.json') == ''  # folders may be created
    assert 'is a folder' in output_problem(tmp_path)
    assert 'is not a folder' in output_problem(tmp_path / 'file' / 'r.json')
    assert 'exists and is not a folder' in output_problem(tmp_path / 'file', kind='dir')
    assert 'is empty' in output_problem('')


@pytest.mark.parametrize(('content', 'words'), [
    (b'\xff\xd8\xff\xe0binary', 'is not a text file (binary?)'),
    (b'', 'is not JSON'),
    (b'{"schema": "isaac_perf.profile/1", "stages": {"a": {"wall_ms": ["x", 2]}}}',
     "stage 'a' wall_ms[0] is 'x', not a number"),
    (b'{"schema": "isaac_perf.profile/1", "stages": {"a": {"wall_ms": 5}}}', "lacks a 'wall_ms' list"),
    (b'[1, 2]', 'a profile is a JSON object'),
])
def test_report_refuses_bad_input_files_by_name(tmp_path, capsys, content, words):
    path = tmp_path / 'in.json'
    path.write_bytes(content)
    assert cli.main(['report', str(path), '--out', str(tmp_path / 'out'), '--no-plots']) == 2
    err = capsys.readouterr().err
    assert words in err and 'Traceback' not in err, err


def test_report_still_works_on_a_good_profile(tmp_path, capsys):
    path = tmp_path / 'good.json'
    path.write_text(json.dumps({'schema': 'isaac_perf.profile/1', 'stages': {'a': {'wall_ms': [1.0, 2.0]}}}))
    assert cli.main(['report', str(path), '--out', str(tmp_path / 'out'), '--no-plots']) == 0
    assert 'frame mean' in capsys.readouterr().out


@pytest.mark.parametrize('content', [b'', b'{}', b'\x00\x01'])
def test_bench_compare_on_empty_or_junk_files_fails(tmp_path, capsys, content):
    a = tmp_path / 'a.json'
    a.write_bytes(content)
    assert cli.main(['bench', 'compare', str(a), str(a)]) == 2
    assert 'isaac-perf bench compare:' in capsys.readouterr().err


def test_run_refuses_too_many_cameras_before_loading_a_model(capsys):
    """--cameras 1000 is checked against image_source's range before any node (or model) exists."""
    assert cli.main(['run', '--cameras', '1000', '--quiet']) == 2
    assert 'image_source: camera_count=1000 is above its maximum' in capsys.readouterr().err
