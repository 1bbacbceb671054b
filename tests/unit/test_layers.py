"""The packages are layers, and imports only run down: api -> jobs -> storage/upstream/files ->
domain. Every import statement of every module counts (inside functions and `TYPE_CHECKING`
blocks too): a dependency is a dependency even when it is deferred.

    wiring (app, server)      may import anything
    cli                       anything but api
    api                       jobs, storage, upstream, tunnel, files, domain, support, config
    jobs                      storage, upstream, tunnel, files, domain, support
    files                     upstream (the guarded HTTP client), domain, support
    storage                   domain only; only `service.storage` picks a backend, lazily
    upstream                  domain, support
    tunnel                    upstream, domain, support (the public address and its probe)
    config (settings)         storage (its options), upstream (network lists), domain; read
                              only by the outer layers
    support (metrics, logs)   domain
    domain                    the standard library only
    simulator                 itself, and the shared clock
"""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVICE = ROOT / "service"

TOP_LEVEL = {
    "service": "wiring",
    "service.__main__": "wiring",
    "service.app": "wiring",
    "service.assembly": "wiring",
    "service.server": "wiring",
    "service.settings": "config",
    "service.metrics": "support",
    "service.logs": "support",
    "service.logwriter": "support",
    # stays at the top, standard library only: the simulator (kept apart) imports it too
    "service.clock": "domain",
}
PACKAGES = ("domain", "storage", "upstream", "tunnel", "files", "jobs", "api", "cli", "simulator")
ALLOWED: dict[str, set[str]] = {
    "domain": {"domain"},
    "support": {"support", "domain"},
    "storage": {"storage", "domain"},
    "upstream": {"upstream", "domain", "support"},
    "tunnel": {"tunnel", "upstream", "domain", "support"},
    "config": {"config", "storage", "upstream", "domain"},
    "files": {"files", "upstream", "domain", "support"},
    "jobs": {"jobs", "storage", "upstream", "tunnel", "files", "domain", "support"},
    "api": {"api", "jobs", "storage", "upstream", "tunnel", "files", "domain", "support"}
    | {"config"},
    "cli": {"cli", "wiring", "jobs", "storage", "upstream", "tunnel", "files", "domain"}
    | {"support"}
    | {"config", "simulator"},
    "wiring": {*PACKAGES, "wiring", "config", "support"},
    "simulator": {"simulator"},
}
SIMULATOR_MAY_USE = {"service.clock"}
BACKENDS = ("service.storage.sqlite", "service.storage.postgres")
FRAMEWORKS = ("starlette", "uvicorn", "httpx")


@dataclass(frozen=True, slots=True)
class Import:
    """One import of a service module: who, what, and whether it runs at import time."""

    importer: str
    imported: str
    deferred: bool  # inside a function: runs only when called


def module_name(path: Path) -> str:
    """`service/a/b.py` -> `service.a.b`; a package's `__init__.py` is the package."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(SERVICE.rglob("*.py"))}


def layer(module: str) -> str:
    """The layer a service module belongs to."""
    if module in TOP_LEVEL:
        return TOP_LEVEL[module]
    package = module.split(".")[1]
    assert package in PACKAGES, f"{module} is in no layer: add it to TOP_LEVEL or a package"
    return package


def _resolve(base: str, name: str | None) -> str:
    """`from base import name`: the submodule when `name` is one, else `base`."""
    if name is not None and f"{base}.{name}" in MODULES:
        return f"{base}.{name}"
    return base


def _imports_of(module: str) -> list[tuple[str, bool]]:
    """Every module `module` imports (any package), with whether it is deferred."""
    tree = ast.parse(MODULES[module].read_text(), str(MODULES[module]))
    found: list[tuple[str, bool]] = []

    def visit(node: ast.AST, deferred: bool) -> None:
        for child in ast.iter_child_nodes(node):
            inner = deferred or isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef)
            if isinstance(child, ast.Import):
                found.extend((alias.name, deferred) for alias in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = module.split(".")
                    if MODULES[module].name != "__init__.py":
                        anchor.pop()
                    anchor = anchor[: len(anchor) - child.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                found.extend((_resolve(base, alias.name), deferred) for alias in child.names)
            visit(child, inner)

    visit(tree, False)
    return found


def service_imports() -> list[Import]:
    """Every import of one service module by another."""
    return [
        Import(module, target, deferred)
        for module in MODULES
        for target, deferred in _imports_of(module)
        if target == "service" or target.startswith("service.")
    ]


def violations() -> set[tuple[str, str]]:
    """(importer, imported) pairs whose arrow runs against the layers."""
    wrong = set()
    for imp in service_imports():
        source, target = layer(imp.importer), layer(imp.imported)
        if source == "simulator" and imp.imported in SIMULATOR_MAY_USE:
            continue
        if target not in ALLOWED[source]:
            wrong.add((imp.importer, imp.imported))
    return wrong


def test_imports_run_down_the_layers() -> None:
    """No module imports a layer above its own (or one beside it that it may not use)."""
    assert sorted(violations()) == []


def test_domain_imports_only_the_standard_library() -> None:
    """The domain needs no third-party package: its rules run anywhere."""
    outside = {
        (module, target)
        for module in MODULES
        if layer(module) == "domain"
        for target, _ in _imports_of(module)
        if target.split(".")[0] not in {*sys.stdlib_module_names, "service"}
    }
    assert sorted(outside) == []


def test_only_the_storage_factory_imports_a_backend_lazily() -> None:
    """Outside the backend itself, only `service.storage` imports it, and only when called."""
    users = {
        (imp.importer, imp.deferred)
        for imp in service_imports()
        for backend in BACKENDS
        if (imp.imported == backend or imp.imported.startswith(backend + "."))
        and not (imp.importer == backend or imp.importer.startswith(backend + "."))
    }
    assert users == {("service.storage", True)}


def test_no_backend_imports_another() -> None:
    """What backends share lives in `service.storage` (e.g. `columns`), not in one of them."""
    crossing = {
        (imp.importer, imp.imported)
        for imp in service_imports()
        for backend in BACKENDS
        if imp.importer.startswith(backend + ".")
        for other in BACKENDS
        if other != backend and imp.imported.startswith(other)
    }
    assert crossing == set()


def _loaded_after(modules: list[str]) -> set[str]:
    """Top-level packages in `sys.modules` after a fresh interpreter imports `modules`."""
    code = (
        "import sys\n"
        f"for name in {modules!r}: __import__(name)\n"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    out = subprocess.run(  # our own interpreter, fixed code
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    return set(out.stdout.split())


def test_storage_imports_no_http_framework() -> None:
    """Importing the storage contract and its backend loads no HTTP framework or client."""
    storage = [m for m in MODULES if layer(m) == "storage"]
    assert sorted(_loaded_after(storage) & set(FRAMEWORKS)) == []


def test_domain_loads_nothing_but_the_standard_library() -> None:
    """Importing every domain module loads only standard-library modules (and the domain)."""
    domain = [m for m in MODULES if layer(m) == "domain"]
    loaded = _loaded_after(domain) - set(sys.stdlib_module_names) - {"service"}
    assert sorted(m for m in loaded if not m.startswith("_")) == []


def test_every_module_has_a_layer() -> None:
    """A new module lands in a package (or is named here as part of the app's wiring)."""
    for module in MODULES:
        layer(module)


def test_the_checker_sees_deferred_imports() -> None:
    """The walk finds imports inside functions and marks them deferred."""
    found = _imports_of("service.storage")
    assert {(backend, True) for backend in BACKENDS} <= set(found)
    assert ("service.storage.base", False) in found


S3_DRIVERS = ("aiobotocore", "botocore", "aiohttp", "types_aiobotocore_s3")


def test_only_the_s3_store_imports_its_driver() -> None:
    """aiobotocore is imported by `service.files.s3` alone, which only the store factory
    (`service.files.store.open_asset_store`) imports, and only when called."""
    drivers = {
        module
        for module in MODULES
        for target, _ in _imports_of(module)
        if target.split(".")[0] in S3_DRIVERS
    }
    assert drivers == {"service.files.s3"}
    users = {
        (imp.importer, imp.deferred)
        for imp in service_imports()
        if imp.imported.startswith("service.files.s3")
    }
    assert users == {("service.files.store", True)}


def test_the_relay_loads_no_s3_driver_unless_chosen() -> None:
    """Importing the app and the command line (which pick the store) loads no S3 client."""
    loaded = _loaded_after(["service.app", "service.cli.main", "service.cli.ops"])
    assert sorted(loaded & set(S3_DRIVERS)) == []
