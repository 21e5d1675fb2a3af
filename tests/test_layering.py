"""The core is a layer: nothing in hear_diffbyola/ but the CLI (the composition root) imports the tasks
(tasks/, installed as hear_diffbyola.tasks) or the s3prl upstream (upstream/diffbyola, installed as
hear_diffbyola.s3prl_upstream); and ``import hear_diffbyola`` does not import torch."""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CORE = "hear_diffbyola"
ABOVE_THE_CORE = ("hear_diffbyola.tasks", "hear_diffbyola.s3prl_upstream")
COMPOSITION_ROOT = "hear_diffbyola.cli"


def module_name(root: Path, package: str, path: Path) -> str:
    parts = [package, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file at ``path`` (module ``module``), at any
    depth (function-local ones too), relative ones resolved; ``from X import y`` yields X and X.y (y may
    be a submodule); ``importlib.import_module("X")`` with a literal name yields X."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module
            found.append((node.lineno, target))
            found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names if alias.name != "*"]
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
            and not node.args[0].value.startswith(".")
        ):
            found.append((node.lineno, node.args[0].value))
    return found


def is_within(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def upward_imports(root: Path, package: str, above: tuple[str, ...], allowed: tuple[str, ...] = ()) -> list[str]:
    """'file:line imports X' for every module under ``root`` (the folder of ``package``), except those in
    ``allowed``, that imports a module within ``above``."""
    bad = []
    for path in sorted(root.rglob("*.py")):
        module = module_name(root, package, path)
        if module in allowed:
            continue
        bad += [
            f"{path.relative_to(root.parent)}:{line} imports {target}"
            for line, target in imported_modules(path, module)
            if is_within(target, above)
        ]
    return bad


def test_the_core_imports_neither_the_tasks_nor_the_upstream():
    bad = upward_imports(REPO / CORE, CORE, ABOVE_THE_CORE, allowed=(COMPOSITION_ROOT,))
    assert bad == [], "the core reaches up (register the command through an entry point instead):\n" + "\n".join(bad)


def test_the_tasks_and_the_upstream_do_not_import_the_cli():
    # they add their commands through add_parser(subparsers) and know nothing of the CLI module
    for folder, package in (
        (REPO / "tasks", "hear_diffbyola.tasks"),
        (REPO / "upstream" / "diffbyola", "hear_diffbyola.s3prl_upstream"),
    ):
        assert upward_imports(folder, package, (COMPOSITION_ROOT,)) == []


def test_the_walker_finds_upward_imports_of_every_form(tmp_path):
    pkg = tmp_path / "pkg"
    files = {
        "__init__.py": "from . import tasks_like\n",  # pkg.tasks_like: not pkg.tasks
        "a.py": "def f():\n    from .tasks import x\n    return x\n",  # function-local, relative
        "sub/__init__.py": "",
        "sub/b.py": "from .. import tasks\nfrom ..up import y\n",  # two levels up; pkg.up is fine
        "sub/c.py": "import pkg.s3prl_upstream.hubconf\nfrom pkg import s3prl_upstream\n",
        "d.py": "import importlib\nm = importlib.import_module('pkg.tasks.demo')\nfrom pkg.tasksx import z\n",
        "root.py": "from .tasks import everything\n",  # the allowed composition root
    }
    for name, text in files.items():
        (pkg / name).parent.mkdir(parents=True, exist_ok=True)
        (pkg / name).write_text(textwrap.dedent(text))
    found = upward_imports(pkg, "pkg", ("pkg.tasks", "pkg.s3prl_upstream"), allowed=("pkg.root",))
    assert found == [
        "pkg/a.py:2 imports pkg.tasks",
        "pkg/a.py:2 imports pkg.tasks.x",
        "pkg/d.py:2 imports pkg.tasks.demo",
        "pkg/sub/b.py:1 imports pkg.tasks",
        "pkg/sub/c.py:1 imports pkg.s3prl_upstream.hubconf",
        "pkg/sub/c.py:2 imports pkg.s3prl_upstream",
    ]


def test_import_hear_diffbyola_leaves_torch_out_and_the_hear_api_still_resolves():
    probe = (
        "import sys, hear_diffbyola\n"
        "print('torch' in sys.modules)\n"
        "from hear_diffbyola import load_model\n"
        "import hear_diffbyola.hear as h\n"
        "print(load_model is h.load_model, hear_diffbyola.get_scene_embeddings is h.get_scene_embeddings,\n"
        "      hear_diffbyola.get_timestamp_embeddings is h.get_timestamp_embeddings)\n"
        "print(all(n in dir(hear_diffbyola) for n in hear_diffbyola.__all__), 'torch' in sys.modules)\n"
        "try:\n    hear_diffbyola.no_such_name\nexcept AttributeError as e:\n    print('AttributeError')\n"
    )
    res = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.split("\n")[:4] == ["False", "True True True", "True True", "AttributeError"]
