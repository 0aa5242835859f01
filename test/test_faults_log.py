"""Once/throttled logging at any severity mix, with rclpy's real logger (which raises 'Logger severity
cannot be changed between calls' when one call site logs at two severities: what killed qos_tuner)."""
import pytest

from isaac_perf.ros.log import LogLimiter, emit

pytest.importorskip('rclpy')
from rclpy.logging import get_logger  # noqa: E402


def test_rclpy_itself_refuses_one_call_site_at_two_severities():
    """The failure the helper avoids, shown on rclpy as installed (if this stops failing, rclpy changed)."""
    logger = get_logger('isaac_perf_test_raw')

    def say(level, text):
        getattr(logger, level)(text)
    say('info', 'first')
    with pytest.raises(ValueError, match='severity cannot be changed'):
        say('warning', 'second')


def test_one_limiter_mixes_severities_on_one_key_set(capfd):
    log = LogLimiter(get_logger('isaac_perf_test_mix'))
    for level in ('info', 'warning', 'error', 'info', 'warning', 'debug', 'fatal'):
        log.once(f'k-{level}', f'said at {level}', level)
        log.log(level, f'plain {level}')
    err = capfd.readouterr().err
    assert 'said at info' in err and 'said at warning' in err and 'said at error' in err
    assert err.count('said at info') == 1


def test_once_until_cleared(capfd):
    log = LogLimiter(get_logger('isaac_perf_test_once'))
    assert log.once('wait', 'waiting for the target', 'info')
    assert not log.once('wait', 'waiting for the target', 'info')
    assert log.suppressed('wait') == 1
    log.clear('wait')
    assert log.once('wait', 'waiting for the target', 'warning')  # again, and at another severity


def test_throttled_counts_what_it_held_back(capfd):
    now = [0.0]
    log = LogLimiter(get_logger('isaac_perf_test_throttle'), clock=lambda: now[0])
    sent = []
    for i in range(10):
        now[0] = i * 0.5
        sent.append(log.throttled('drops', 'frames dropped', 2.0, 'warning'))
    assert sent == [True, False, False, False, True, False, False, False, True, False]
    assert '(3 more like this since the last report)' in capfd.readouterr().err


def test_keys_are_bounded_and_severity_names_checked():
    log = LogLimiter(get_logger('isaac_perf_test_bound'), max_keys=3)
    for i in range(10):
        log.once(f'k{i}', 'x', 'debug')
    assert len(log._last) == 3
    with pytest.raises(ValueError, match="log severity 'loud' is not one of"):
        log.once('k', 'x', 'loud')
    with pytest.raises(ValueError, match='is not one of'):
        emit(log.logger, 'loud', 'x')
