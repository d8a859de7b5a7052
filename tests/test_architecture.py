"""The layers of docs/architecture.rst hold: every module is listed, and none imports a module of a higher layer."""

import ast
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "gamornet")


def _layers():
    """{module: layer index} from the table of docs/architecture.rst (the `_cli_*` modules by their pattern)."""
    with open(os.path.join(ROOT, "docs", "architecture.rst"), encoding="utf-8") as page:
        text = page.read()
    table = text[text.index("layer                   modules"):]
    table = table[table.index("\n=") + 1:]
    table = table[table.index("\n") + 1: table.index("\n=")]
    rows, level = {}, -1
    for line in table.splitlines():
        if line[:24].strip():
            level += 1
        for name in re.findall(r"``([\w.]+)``", line[24:]):
            rows[name] = level
    return rows


def _modules():
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                module = os.path.relpath(path, PACKAGE)[:-3].replace(os.sep, ".").replace(".__init__", "")
                if module != "__init__":
                    yield module, path


def _imported(path):
    """The gamornet modules a file imports (anywhere in it), by their names under gamornet."""
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "gamornet":
            below = node.module[len("gamornet."):] if node.module != "gamornet" else ""
            yield from ([below] if below else [alias.name for alias in node.names])
        elif isinstance(node, ast.Import):
            yield from (alias.name[len("gamornet."):] for alias in node.names if alias.name.startswith("gamornet."))


def _level(layers, module):
    if module.startswith("_cli_"):
        return layers["cli"]
    while module not in layers and "." in module:
        module = module.rsplit(".", 1)[0]  # formats.keras_hdf5 -> formats, if only the package is listed
    return layers.get(module)


def test_the_table_has_the_layers_of_the_page():
    layers = _layers()
    assert layers["presets"] == 0 and layers["predictor"] > layers["_engine"] > layers["models"] > layers["io"]
    assert layers["cli"] == max(layers.values())


def test_every_module_is_listed_and_imports_only_its_layer_or_below():
    layers = _layers()
    wrong = []
    for module, path in _modules():
        level = _level(layers, module)
        if level is None:
            wrong.append(f"{module} is not in the table of docs/architecture.rst")
            continue
        for name in _imported(path):
            other = _level(layers, name)
            if other is not None and other > level:
                wrong.append(f"{module} (layer {level}) imports {name} (layer {other})")
    assert not wrong, "\n".join(wrong)
