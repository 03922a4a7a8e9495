#!/usr/bin/env python3
"""Print the requirements of pyproject.toml's extras, one a line, for `pip install -r`.

The Dockerfile installs dependencies from this list before it copies the source, so that layer is rebuilt
only when pyproject.toml changes. It runs on a bare interpreter (the standard library only): extras that name
the project itself (`supportbot[nlp,llm]`) are expanded here rather than by pip, which would need the source.

    python scripts/requirements.py nlp llm              # core dependencies + both extras
    python scripts/requirements.py --no-core prepare    # one extra alone (and the extras it names)
    python scripts/requirements.py --only torch prepare # just torch's line, e.g. for another index
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from collections.abc import Iterable, Sequence
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"
# A requirement's distribution name (PEP 508), with its extras if any: "uvicorn[standard]>=0.30" -> uvicorn.
_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(?:\[([^\]]*)\])?")


class UnknownExtra(ValueError):
    """An extra that pyproject.toml does not define."""


def canonical(name: str) -> str:
    """PEP 503's normal form: `Scikit_Learn` and `scikit-learn` are one project."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    """The canonical distribution name a requirement line asks for."""
    match = _NAME.match(requirement)
    if not match:
        raise ValueError(f"not a requirement: {requirement!r}")
    return canonical(match.group(1))


def requirements(project: dict, extras: Iterable[str], *, core: bool = True) -> list[str]:
    """The requirement lines of `extras` (and of the core dependencies when `core`), in file order, each once.

    An extra that names the project itself is replaced by the extras it names, so the list installs without the
    project's source. Raises UnknownExtra for an extra that pyproject.toml does not define.
    """
    own = canonical(project["name"])
    optional: dict[str, list[str]] = {canonical(k): v for k, v in project.get("optional-dependencies", {}).items()}
    lines: list[str] = list(project.get("dependencies", [])) if core else []
    seen_extras: set[str] = set()

    def add(extra: str) -> None:
        key = canonical(extra)
        if key in seen_extras:
            return
        if key not in optional:
            raise UnknownExtra(f"pyproject.toml has no extra {extra!r} (it has: {', '.join(sorted(optional))})")
        seen_extras.add(key)
        for line in optional[key]:
            match = _NAME.match(line)
            if match and canonical(match.group(1)) == own:
                if ";" in line:
                    raise ValueError(f"a self-reference with a marker is not supported: {line!r}")
                for name in (match.group(2) or "").split(","):
                    if name.strip():
                        add(name.strip())
            else:
                lines.append(line)

    for extra in extras:
        add(extra)
    unique: list[str] = []
    for line in lines:
        if line not in unique:
            unique.append(line)
    return unique


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("extras", nargs="*", help="extras of pyproject.toml (none: the core dependencies)")
    parser.add_argument("--no-core", action="store_true", help="leave out [project].dependencies")
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help="print only the requirements for this distribution (repeatable)")
    parser.add_argument("--pyproject", type=Path, default=PYPROJECT, help="default: the repository's")
    args = parser.parse_args(argv)
    try:
        project = tomllib.loads(args.pyproject.read_text(encoding="utf-8"))["project"]
        lines = requirements(project, args.extras, core=not args.no_core)
    except (OSError, KeyError, tomllib.TOMLDecodeError, ValueError) as exc:
        print(f"requirements: {exc}", file=sys.stderr)
        return 2
    if args.only:
        wanted = {canonical(name) for name in args.only}
        lines = [line for line in lines if requirement_name(line) in wanted]
        missing = wanted - {requirement_name(line) for line in lines}
        if missing:
            print(f"requirements: no requirement for {', '.join(sorted(missing))} in those extras", file=sys.stderr)
            return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
