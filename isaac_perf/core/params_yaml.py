"""Reading ROS 2 params files with errors that name the file, the line and the fix.

rcl parses `--params-file` itself, but its refusals end in a traceback from `rclpy.init` that points into
rcl's C sources; `isaac-perf run` reads the same files with PyYAML, where a bad file became a
`yaml.YAMLError` or an AttributeError. `read_params_file` checks what rcl requires (node name ->
`ros__parameters` -> name: value, namespaces nested, values scalars or lists of one type) and raises
`ParamsFileError` with one line a user can act on. `unknown_names` finds keys a node does not declare.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

FORMAT_HINT = 'a params file maps node names to {ros__parameters: {name: value}}'


class ParamsFileError(ValueError):
    """A params file cannot be used; the message names the file and what to change."""


def read_params_file(path: str | Path) -> dict[str, dict[str, Any]]:
    """Node name (as written, e.g. '/**' or 'ns/inference_node') -> flat {parameter name: value}.

    Nested parameter maps become dotted names (`qos_overrides./t.reliability`), as rcl names them.
    """
    import yaml
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ParamsFileError(f'params file {path} does not exist: check the path') from None
    except IsADirectoryError:
        raise ParamsFileError(f'params file {path} is a folder: give the path of a .yaml file') from None
    except OSError as exc:
        raise ParamsFileError(f'params file {path} cannot be read ({exc.strerror}): check its '
                              'permissions') from None
    try:
        text = raw.decode('utf-8')
    except UnicodeDecodeError:
        raise ParamsFileError(f'params file {path} is not UTF-8 text (binary?): {FORMAT_HINT}') from None
    if '\x00' in text:
        raise ParamsFileError(f'params file {path} is not text (contains NUL bytes): {FORMAT_HINT}')
    try:
        data = yaml.load(text, Loader=_loader())  # noqa: S506 - a SafeLoader subclass (see _loader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, 'problem_mark', None)
        where = f' at line {mark.line + 1}, column {mark.column + 1}' if mark is not None else ''
        problem = getattr(exc, 'problem', None) or type(exc).__name__
        raise ParamsFileError(f'params file {path} is not valid YAML{where}: {problem}; fix the YAML '
                              f'({FORMAT_HINT})') from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ParamsFileError(f'params file {path} holds a {type(data).__name__}, not a mapping: '
                              f'{FORMAT_HINT}')
    out: dict[str, dict[str, Any]] = {}
    _walk_nodes(path, data, '', out)
    return out


def _loader() -> type:
    """PyYAML's SafeLoader, reading any tag as the plain YAML value under it, as rcl does: launch_ros
    writes its temporary params files with `!!python/tuple` lists, which safe_load refuses."""
    import yaml

    class TagBlindLoader(yaml.SafeLoader):
        pass

    def plain(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> Any:
        if isinstance(node, yaml.SequenceNode):
            return loader.construct_sequence(node, deep=True)
        if isinstance(node, yaml.MappingNode):
            return loader.construct_mapping(node, deep=True)
        node = yaml.ScalarNode(loader.resolve(yaml.ScalarNode, node.value, (True, False)), node.value,
                               node.start_mark, node.end_mark, node.style)
        return loader.construct_object(node)

    TagBlindLoader.add_multi_constructor('tag:yaml.org,2002:python/', plain)
    TagBlindLoader.add_multi_constructor('!', plain)
    return TagBlindLoader


def _walk_nodes(path: Path, data: dict[Any, Any], prefix: str, out: dict[str, dict[str, Any]]) -> None:
    for key, section in data.items():
        name = f'{prefix}/{key}' if prefix else str(key)
        if not isinstance(section, dict):
            raise ParamsFileError(f'params file {path}: {name!r} is {_kind(section)}, not a mapping: '
                                  f'{FORMAT_HINT}')
        if 'ros__parameters' in section:
            params = section['ros__parameters']
            if params is None:
                params = {}
            if not isinstance(params, dict):
                raise ParamsFileError(f'params file {path}: {name}.ros__parameters is {_kind(params)}; it '
                                      'must be a mapping of parameter names to values')
            extra = [str(k) for k in section if k != 'ros__parameters']
            if extra:
                raise ParamsFileError(f'params file {path}: {name} has {", ".join(extra)} beside '
                                      'ros__parameters: move them under ros__parameters')
            flat: dict[str, Any] = {}
            _flatten(path, name, params, '', flat)
            out.setdefault(name, {}).update(flat)
        else:
            _walk_nodes(path, section, name, out)


def _flatten(path: Path, node: str, params: dict[Any, Any], prefix: str, flat: dict[str, Any]) -> None:
    for key, value in params.items():
        name = f'{prefix}.{key}' if prefix else str(key)
        if isinstance(value, dict):
            _flatten(path, node, value, name, flat)
            continue
        problem = _value_problem(value)
        if problem:
            raise ParamsFileError(f'params file {path}: {node}: parameter {name!r} {problem}')
        flat[name] = value


def _value_problem(value: Any) -> str:
    scalar = (bool, int, float, str)
    if value is None:
        return 'has no value: give one, or remove the line'
    if isinstance(value, scalar):
        return ''
    if isinstance(value, list):
        if not value:
            return ''
        if any(isinstance(v, (list, dict)) or v is None for v in value):
            return 'is a list of lists/maps/nulls: a parameter list holds scalars of one type'
        kinds = {bool if isinstance(v, bool) else (float if isinstance(v, (int, float)) and not
                                                   isinstance(v, bool) else type(v)) for v in value}
        if len(kinds) > 1:
            return 'mixes types in one list: use one type (e.g. all strings, or all numbers)'
        if kinds == {float} and {type(v) for v in value} == {int, float}:
            return 'mixes integers and floats: write every element as a float (1.0, not 1)'
        return ''
    return f'has a {type(value).__name__} value, which a ROS parameter cannot hold'


def _kind(value: Any) -> str:
    if value is None:
        return 'empty'
    kind = type(value).__name__
    return f'{"an" if kind[0] in "aeiou" else "a"} {kind} ({value!r:.40})'


def params_file_args(argv: Sequence[str]) -> list[str]:
    """The `--params-file PATH` values inside the `--ros-args` sections of a command line."""
    files: list[str] = []
    in_ros = False
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == '--ros-args':
            in_ros = True
        elif arg == '--':
            in_ros = False
        elif in_ros and arg == '--params-file' and i + 1 < len(argv):
            files.append(argv[i + 1])
            i += 1
        i += 1
    return files


def check_override_args(argv: Sequence[str]) -> None:
    """Refuse `-p name:=value` overrides rcl would refuse with a line pointing into its C sources."""
    import yaml
    in_ros = False
    for i, arg in enumerate(argv):
        if arg == '--ros-args':
            in_ros = True
        elif arg == '--':
            in_ros = False
        elif in_ros and arg in ('-p', '--param') and i + 1 < len(argv):
            rule = argv[i + 1]
            name, sep, text = rule.partition(':=')
            if not sep or not name:
                raise ParamsFileError(f'-p {rule!r} is not name:=value: write e.g. -p rate_hz:=30.0')
            if not text.strip():
                raise ParamsFileError(f"parameter '{name}' has no value in -p {rule!r}: give one "
                                      f'(e.g. -p {name}:=<value>) or leave it out')
            try:
                value = yaml.safe_load(text)
            except yaml.YAMLError:
                raise ParamsFileError(f"-p {rule!r}: the value of '{name}' is not valid YAML: quote a "
                                      "string, or write a list as [a, b]") from None
            problem = _value_problem(value) if not isinstance(value, dict) else 'is a map'
            if problem:
                raise ParamsFileError(f"-p {rule!r}: parameter '{name}' {problem}")


def unknown_names(given: Iterable[str], declared: Iterable[str]) -> list[str]:
    """One message per given name that is not declared, with the closest declared name when there is one."""
    declared = sorted(set(declared))
    out = []
    for name in sorted(set(given)):
        if name in declared or name.startswith('qos_overrides.'):
            continue
        close = difflib.get_close_matches(name, declared, n=1, cutoff=0.6)
        out.append(f'{name!r}' + (f' (did you mean {close[0]!r}?)' if close else ''))
    return out
