"""The large-frame DDS configuration: which environment is applied, and when a user's choice wins."""
import xml.etree.ElementTree as ET

import pytest

from isaac_perf.core import dds_profile
from isaac_perf.core.dds_profile import PROFILE_VARIABLE, SWITCH_VARIABLE, apply, profile_environment


def test_default_applies_only_the_fastdds_variable_with_the_shipped_profile():
    decision = profile_environment({})
    assert decision.applied
    assert decision.environment == {PROFILE_VARIABLE: str(dds_profile.profile_path())}
    assert 'FASTRTPS_DEFAULT_PROFILES_FILE' not in decision.environment  # set twice = loaded twice


def test_shipped_profile_has_a_shm_segment_that_fits_full_hd_frames():
    ns = {'d': 'http://www.eprosima.com'}
    root = ET.parse(dds_profile.profile_path()).getroot()
    shm = [t for t in root.iterfind('.//d:transport_descriptor', ns) if t.findtext('d:type', '', ns) == 'SHM']
    assert len(shm) == 1
    segment = int(shm[0].findtext('d:segment_size', '0', ns))
    assert segment == dds_profile.SEGMENT_BYTES
    assert segment >= 8 * 1920 * 1080 * 3  # eight 1080p rgb8 frames in flight
    default = [p for p in root.iterfind('.//d:participant', ns) if p.get('is_default_profile') == 'true']
    assert len(default) == 1
    used = [t.text for t in default[0].iterfind('.//d:userTransports/d:transport_id', ns)]
    assert shm[0].findtext('d:transport_id', '', ns) in used
    assert 'UDPv4' in [t.findtext('d:type', '', ns) for t in root.iterfind('.//d:transport_descriptor', ns)
                       if t.findtext('d:transport_id', '', ns) in used]  # other hosts still reachable


@pytest.mark.parametrize('value', ['off', 'OFF', '0', 'false', 'no', 'none'])
def test_switch_off(value):
    decision = profile_environment({SWITCH_VARIABLE: value})
    assert not decision.applied and 'off' in decision.reason


@pytest.mark.parametrize('name', [PROFILE_VARIABLE, 'FASTRTPS_DEFAULT_PROFILES_FILE'])
def test_a_users_own_profile_wins(name):
    decision = profile_environment({name: '/etc/my_profile.xml'})
    assert not decision.applied and '/etc/my_profile.xml' in decision.reason


def test_other_middleware_gets_nothing_and_fastrtps_variants_get_the_profile():
    assert not profile_environment({'RMW_IMPLEMENTATION': 'rmw_cyclonedds_cpp'}).applied
    assert profile_environment({'RMW_IMPLEMENTATION': 'rmw_fastrtps_dynamic_cpp'}).applied


def test_switch_names_another_file(tmp_path):
    mine = tmp_path / 'mine.xml'
    mine.write_text('<dds/>')
    assert profile_environment({SWITCH_VARIABLE: str(mine)}).environment == {PROFILE_VARIABLE: str(mine)}
    with pytest.raises(FileNotFoundError, match='does not exist.*ISAAC_PERF_DDS_PROFILE=off'):
        profile_environment({SWITCH_VARIABLE: str(tmp_path / 'missing.xml')})


def test_apply_updates_the_mapping_in_place():
    env = {'PATH': '/bin'}
    decision = apply(env)
    assert env == {'PATH': '/bin', **decision.environment}
    assert apply(env).environment == {}  # already set: a second apply keeps it (user's or ours)


def test_every_launch_file_gives_its_nodes_the_profile():
    from pathlib import Path
    for path in sorted((Path(__file__).resolve().parents[1] / 'launch').glob('*.launch.py')):
        text = path.read_text()
        assert text.count('Node(') == text.count('additional_env=dds_environment()'), path.name
        assert 'from isaac_perf.core.dds_profile import dds_environment' in text, path.name
