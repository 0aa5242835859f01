"""Output paths a node is told to write (qos_tuner's output_config_path): confined to one folder, no
`..`, no escape through a symbolic link, no replacing a file this package did not write."""
import os

import pytest

from isaac_perf.core.output_paths import MARKER, OutputPathError, check_writable, ours, write_text


@pytest.fixture
def root(tmp_path):
    return tmp_path / 'out'


def test_a_plain_name_is_written_inside_the_root_with_the_marker(root):
    path = write_text(root, 'tuned.yaml', 'a: 1\n')
    assert path == root.resolve() / 'tuned.yaml' and path.read_text() == f'{MARKER}\na: 1\n' and ours(path)
    write_text(root, str(path), 'a: 2\n')  # an absolute path inside the root, replacing our own file
    assert path.read_text().endswith('a: 2\n')


@pytest.mark.parametrize(('requested', 'words'), [
    ('../evil.yaml', 'contains ".."'),
    ('sub/../../evil.yaml', 'contains ".."'),
    ('/etc/evil.yaml', 'is outside the output folder'),
    ('', 'is empty'),
    ('a\x00b', 'NUL byte'),
    ('.', 'names the output folder itself'),
    ('missing/dir/x.yaml', 'folder'),
])
def test_paths_outside_or_odd_are_refused(root, requested, words):
    root.mkdir()
    with pytest.raises(OutputPathError, match=words):
        write_text(root, requested, 'x')
    assert sorted(os.listdir(root)) == []


def test_a_symlink_out_of_the_root_is_refused(root, tmp_path):
    root.mkdir()
    outside = tmp_path / 'outside'
    outside.mkdir()
    (root / 'link').symlink_to(outside)
    with pytest.raises(OutputPathError, match='is outside the output folder'):
        write_text(root, 'link/x.yaml', 'x')
    assert list(outside.iterdir()) == []


def test_a_file_we_did_not_write_is_never_replaced(root):
    root.mkdir()
    foreign = root / 'notes.yaml'
    foreign.write_text('my own notes\n')
    with pytest.raises(OutputPathError, match='exists and was not written by isaac_perf'):
        write_text(root, 'notes.yaml', 'x')
    assert foreign.read_text() == 'my own notes\n'


def test_a_folder_is_refused_and_only_the_root_is_created(root):
    root.mkdir()
    (root / 'sub').mkdir()
    with pytest.raises(OutputPathError, match='is a folder'):
        check_writable(root, 'sub')
    assert check_writable(root, 'sub/x.yaml') == root.resolve() / 'sub' / 'x.yaml'


def test_a_relative_root_is_refused():
    with pytest.raises(OutputPathError, match='not absolute'):
        check_writable('relative/root', 'x.yaml')
