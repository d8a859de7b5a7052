"""The rules of docs/architecture.rst hold: layers, no import loops, no library module importing the command line,
private names kept private, no module over 700 lines of code, and no import-order tricks."""

import ast
import os
import re

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(ROOT, "gamornet")

#: Uses of another module's underscore name allowed in all, each inside one wing.
PRIVATE_BUDGET = 10
MAX_CODE_LINES = 700


def _layers():
    """{wing or top-level module: layer index} from the table of docs/architecture.rst."""
    with open(os.path.join(ROOT, "docs", "architecture.rst"), encoding="utf-8") as page:
        text = page.read()
    table = text[text.index("layer                   wings and modules"):]
    table = table[table.index("\n=") + 1:]
    table = table[table.index("\n") + 1: table.index("\n=")]
    rows = {}
    for level, line in enumerate(table.splitlines()):
        for name in re.findall(r"``([\w.]+)``", line[24:]):
            rows[name] = level
    return rows


def _modules():
    """{module name: path}, names such as 'gamornet.inference.predictor' (a package by its own name)."""
    found = {}
    for folder, _, files in os.walk(PACKAGE):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                module = "gamornet." + os.path.relpath(path, PACKAGE)[:-3].replace(os.sep, ".")
                found[module.removesuffix(".__init__")] = path
    return found


MODULES = _modules()


def _known(name):
    """The longest prefix of ``name`` that is a module of the package (``gamornet.models.resolve`` -> models)."""
    while name not in MODULES and "." in name:
        name = name.rsplit(".", 1)[0]
    return name if name in MODULES else None


def _imports(module):
    """[(imported module, name imported from it or None)] of every import in the module, at any depth."""
    path = MODULES[module]
    package = module if path.endswith("__init__.py") else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read())):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = anchor + ("." + base if base else "")
            if base.split(".")[0] != "gamornet":
                continue
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.append((submodule, None) if submodule in MODULES else (_known(base), alias.name))
        elif isinstance(node, ast.Import):
            found += [(_known(alias.name), None) for alias in node.names if alias.name.split(".")[0] == "gamornet"]
    return [(target, name) for target, name in found if target is not None and target != module]


def _wing(module):
    """The wing (subpackage) or top-level module a module belongs to: 'inference', 'keras_module', 'gamornet'."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "gamornet"


def _graph():
    return {module: {target for target, _ in _imports(module)} for module in MODULES}


def _loops(graph):
    """The strongly connected groups of more than one module (Tarjan's algorithm, iterative)."""
    index, low, on_stack, stack, groups, counter = {}, {}, set(), [], [], [0]

    def visit(start):
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    group = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        group.add(member)
                        if member == node:
                            break
                    if len(group) > 1:
                        groups.append(sorted(group))
            elif child not in index:
                index[child] = low[child] = counter[0]
                counter[0] += 1
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph[child]))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])

    for module in sorted(graph):
        if module not in index:
            visit(module)
    return groups


def test_the_table_has_the_layers_of_the_page():
    layers = _layers()
    assert layers["presets"] == 0 and layers["_utils"] == 0
    assert layers["io"] < layers["models"] < layers["inference"] < layers["survey"] < layers["cli"]
    assert layers["cli"] < layers["gamornet"] == max(layers.values())


def test_every_wing_is_in_the_table():
    layers = _layers()
    missing = sorted({_wing(module) for module in MODULES} - set(layers))
    assert not missing, f"wings missing from the table of docs/architecture.rst: {missing}"


def test_imports_only_point_down():
    layers = _layers()
    wrong = [f"{module} (layer {layers[_wing(module)]}) imports {target} (layer {layers[_wing(target)]})"
             for module in MODULES for target, _ in _imports(module)
             if layers[_wing(target)] > layers[_wing(module)]]  # fmt: skip
    assert not wrong, "\n".join(wrong)


def test_there_is_no_import_loop():
    assert _loops(_graph()) == []


def test_the_loop_finder_finds_a_loop():
    assert _loops({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _loops({"a": {"b"}, "b": set()}) == []


def test_no_library_module_imports_the_command_line():
    wrong = [f"{module} imports {target}" for module in MODULES if _wing(module) != "cli"
             for target, _ in _imports(module) if _wing(target) == "cli"]  # fmt: skip
    assert not wrong, "\n".join(wrong)


def _private_uses(module):
    """The underscore names of other modules that ``module`` uses: imported by name, or read as attributes."""
    tree = ast.parse(open(MODULES[module], encoding="utf-8").read())
    aliases = {}
    uses = []
    for target, name in _imports(module):
        if name is not None and name.startswith("_") and not name.startswith("__"):
            uses.append((target, name))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "gamornet":
            for alias in node.names:
                if f"{node.module}.{alias.name}" in MODULES:
                    aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            aliases.update({alias.asname: alias.name for alias in node.names
                            if alias.asname and alias.name in MODULES})  # fmt: skip
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in aliases
                and node.attr.startswith("_") and not node.attr.startswith("__")):
            uses.append((aliases[node.value.id], node.attr))
    return [(target, name) for target, name in uses if target != module]


def test_private_names_stay_private():
    crossings = [(module, target, name) for module in MODULES for target, name in _private_uses(module)]
    across_wings = [f"{module} uses {target}.{name}" for module, target, name in crossings
                    if _wing(module) != _wing(target)]  # fmt: skip
    assert not across_wings, "\n".join(across_wings)
    assert len(crossings) <= PRIVATE_BUDGET, "\n".join(f"{m} uses {t}.{n}" for m, t, n in crossings)


def _code_lines(path):
    """Lines that are neither blank, comments nor docstrings."""
    source = open(path, encoding="utf-8").read()
    docstrings = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and node.body:
            first = node.body[0]
            if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(
                    first.value.value, str):
                docstrings.update(range(first.lineno, first.end_lineno + 1))
    return sum(1 for number, line in enumerate(source.splitlines(), 1)
               if line.strip() and not line.strip().startswith("#") and number not in docstrings)


def test_no_module_is_over_700_lines_of_code():
    sizes = {module: _code_lines(path) for module, path in MODULES.items()}
    large = {module: size for module, size in sizes.items() if size > MAX_CODE_LINES}
    assert not large, large


@pytest.mark.parametrize("code", ["E402", "I100"])
def test_no_import_order_tricks(code):
    wrong = [f"{os.path.relpath(path, ROOT)}:{number}" for path in MODULES.values()
             for number, line in enumerate(open(path, encoding="utf-8"), 1) if f"noqa: {code}" in line
             or ("noqa: F401" in line and re.match(r"\s*import gamornet", line))]  # fmt: skip
    assert not wrong, wrong


def _walk(call):
    """The (caller module, callee module) pairs of gamornet's own calls while ``call()`` runs, in order."""
    import sys

    steps = []

    def profile(frame, event, arg):
        if event != "call" or frame.f_back is None:
            return
        callee, caller = frame.f_globals.get("__name__", ""), frame.f_back.f_globals.get("__name__", "")
        if callee.startswith("gamornet") and caller.startswith("gamornet") and callee != caller:
            steps.append((caller, callee))

    sys.setprofile(profile)
    try:
        result = call()
    finally:
        sys.setprofile(None)
    return result, steps


@pytest.mark.slow
def test_the_walk_of_load_predictor_never_climbs_back_up(tmp_path, keras_case):
    import gamornet
    from legacy_files import write_keras2_file

    images, weights = keras_case("custom", n_images=3)
    model = write_keras2_file(str(tmp_path / "model.hdf5"), weights)
    predictor, steps = _walk(lambda: gamornet.load_predictor(model, images.shape[1:], calibration=None))
    with predictor:
        assert predictor.predict(images).shape == (3, 3)
    layers = _layers()
    climbs = [(caller, callee) for caller, callee in steps if layers[_wing(callee)] > layers[_wing(caller)]]
    assert not climbs, climbs
    rooms = {_wing(callee) for _, callee in steps}
    assert {"inference", "models"} <= rooms and "cli" not in rooms, rooms
