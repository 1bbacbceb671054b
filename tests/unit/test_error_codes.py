"""The README's list of error codes and the codes the service can answer are the same list.

The codes are collected from the source: every construction of a domain error (its `code=`
argument, else its class's `code`), every literal `error_body(...)` code, and the codes the
framework's own refusals are mapped to. The GrsAI simulator speaks GrsAI's errors, not ours, and
is left out.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
from pathlib import Path

import service
from service.api import errors
from service.domain import errors as domain_errors
from service.domain.errors import RelayError

ROOT = Path(__file__).resolve().parents[2]
SERVICE = ROOT / "service"
ROW = re.compile(r"^\| `([a-z_]+)` \| (\d{3}|\dxx) \| .+ \|$")


def _error_classes() -> dict[str, type[RelayError]]:
    for module in pkgutil.walk_packages(service.__path__, "service."):
        if not module.name.startswith(("service.simulator", "service.__main__")):
            importlib.import_module(module.name)
    found: dict[str, type[RelayError]] = {}
    pending: list[type[RelayError]] = [RelayError]
    while pending:
        cls = pending.pop()
        found[cls.__name__] = cls
        pending += cls.__subclasses__()
    return found


def _callee(node: ast.Call) -> str:
    if isinstance(node.func, ast.Name):
        return node.func.id
    return node.func.attr if isinstance(node.func, ast.Attribute) else ""


def emitted_codes() -> dict[str, set[int]]:
    """Every error code the service can answer, with the HTTP statuses it comes with."""
    classes = _error_classes()
    codes: dict[str, set[int]] = {errors.HTTP_ERROR: set()}
    for status, code in errors.HTTP_ERROR_CODES.items():
        codes.setdefault(code, set()).add(status)
    for path in sorted(SERVICE.rglob("*.py")):
        if "simulator" in path.relative_to(SERVICE).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Call):
                continue
            name, where = _callee(node), f"{path.relative_to(ROOT)}:{node.lineno}"
            given = next((kw.value for kw in node.keywords if kw.arg == "code"), None)
            if given is not None:
                assert isinstance(given, ast.Constant), f"{where}: write `code=` as a literal"
                assert isinstance(given.value, str), where
                statuses = {classes[name].status} if name in classes else set()
                codes.setdefault(given.value, set()).update(statuses)
            elif name in classes:
                codes.setdefault(classes[name].code, set()).add(classes[name].status)
            elif name == "error_body" and isinstance(node.args[0], ast.Constant):
                codes.setdefault(str(node.args[0].value), set()).add(500)
    return codes


def readme_codes() -> dict[str, str]:
    """The README's "Error codes" table: code -> status as written."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n### Error codes\n", 1)[1].split("\n#", 1)[0]
    rows = [ROW.match(line) for line in section.splitlines() if line.startswith("| `")]
    assert all(rows), "every row reads | `code` | status | meaning |"
    return {row[1]: row[2] for row in rows if row}


def test_readme_lists_every_error_code_and_no_other() -> None:
    """Each code the service can answer is in the README's table, and each listed code exists."""
    emitted, listed = emitted_codes(), readme_codes()
    assert sorted(set(emitted) - set(listed)) == [], "answered but not in the README"
    assert sorted(set(listed) - set(emitted)) == [], "in the README but never answered"


def test_readme_gives_each_code_its_status() -> None:
    """Where the code fixes a code's HTTP status, the README's table gives that status."""
    listed = readme_codes()
    wrong = {
        code: (listed[code], sorted(statuses))
        for code, statuses in emitted_codes().items()
        if statuses and listed.get(code) != "/".join(str(s) for s in sorted(statuses))
    }
    assert wrong == {}


def test_collector_sees_codes_from_every_source() -> None:
    """The collector finds class codes, `code=` arguments and the framework's routing codes."""
    emitted = emitted_codes()
    assert emitted["unauthorized"] == {401}  # a class's own code
    assert emitted["invalid_cursor"] == {400}  # a code= argument
    assert emitted["range_not_satisfiable"] == {416}  # a class's code, raised without code=
    assert emitted["method_not_allowed"] == {405}  # the framework's refusal
    assert emitted["internal_error"] == {500}  # error_body's literal


def test_the_error_tree_is_one_module_and_its_drawing_is_complete() -> None:
    """Every error class lives in `service.domain.errors` and is drawn in its docstring."""
    classes = _error_classes()
    assert {c.__module__ for c in classes.values()} == {"service.domain.errors"}
    drawing = domain_errors.__doc__ or ""
    drawn = set(re.findall(r"^[│├└─ ]*(\w+) +->", drawing, re.MULTILINE))
    assert drawn == set(classes)
