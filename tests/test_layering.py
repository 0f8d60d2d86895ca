"""The package's structure: which layer may import which. Imports inside functions count too, so a lazy import
cannot hide a cycle or a layer crossed upward; the few lazy imports that remain are listed with their reason."""

import ast
import os

ROOT = os.path.join(os.path.dirname(__file__), "..", "genscl_jax")

# Each sub-package and what it may import of genscl_jax besides itself. Imports run downward only:
# main/runner -> trainers -> {training, objectives, models, data, workdirs} -> runtime.
LAYERS = {
    "runtime": set(),
    "config": set(), "config.defaults": set(), "config.recipes": {"config.defaults"},
    "objectives": set(),  # pure maths: jax and optax only (test_objectives_import_only_jax_and_optax)
    "models": set(),
    "data": {"runtime"},
    "training": {"runtime"},
    "workdirs": {"training", "models", "runtime"},
    # Whether a feature is on is said once (config.features, which imports nothing); the trainers ask it too.
    "config.features": set(),
    "trainers": {"training", "objectives", "models", "data", "workdirs", "runtime", "config.features"},
    # A config's keys and their errors; the rerun policy (which keys a rerun may change).
    "config.keys": {"config.defaults"}, "config.rerun": {"config.defaults", "config.keys", "config.features"},
    # Validation reads the allowed values from the code that implements them, so it sits above those layers.
    "config.validation": {"config.defaults", "config.keys", "config.features", "data", "models", "objectives",
                          "training", "runtime"},
    "runner": {"config", "trainers", "training", "data", "workdirs", "runtime"},
    "main": {"config", "runner", "runtime"},  # runtime: it gives preemption the way to end the process
    # Command-line forwarders (`python -m genscl_jax.bench` ...), each to the one module it names.
    "bench": {"tools"}, "study": {"tools"}, "plan": {"tools"}, "export": {"workdirs"},
    # Tools use the library; the library never imports them.
    "tools": {"config", "trainers", "training", "objectives", "models", "data", "workdirs", "runtime"},
    # `genscl_jax.load_encoder` and `from genscl_jax import losses, mixing`, resolved lazily.
    "": {"workdirs", "objectives"},
}

# (importer, imported): deferred on purpose, each for a reason a reader should know.
ALLOWED_LAZY = {
    # The tf.data pipeline (TensorFlow) is loaded only when a tfds dataset is read: synthetic runs, the bench and
    # a bare accelerator VM never import TensorFlow.
    ("genscl_jax.data.source", "genscl_jax.data.tf_pipeline"),
    # Likewise TensorFlow: measuring an image folder's statistics (once; later runs read them), and the facts of a
    # tfds:NAME dataset, which come from its tfds builder.
    ("genscl_jax.data.source", "genscl_jax.data.tf_stats"), ("genscl_jax.data.source", "genscl_jax.data.tfds_by_name"),
    ("genscl_jax.data.source", "genscl_jax.data.tfds_builders"),
    # A registry hook, named by string so the registry itself imports nothing.
    ("genscl_jax.data.registry", "genscl_jax.data.fashion_mnist_offline"),
    # Only the mode that runs is imported: `--mode linear_eval` never builds the pretraining step, and clu's writers
    # (reporting, with TensorBoard) load only when a loop reports.
    ("genscl_jax.runner", "genscl_jax.trainers.pretrain"), ("genscl_jax.runner", "genscl_jax.trainers.supervised"),
    ("genscl_jax.runner", "genscl_jax.trainers.linear_eval"),
    ("genscl_jax.training.train_loop", "genscl_jax.training.reporting"),
    # `python -m genscl_jax.plan` keeps JAX on the CPU (and sets libtpu's options) before JAX loads.
    ("genscl_jax.plan", "genscl_jax.tools.plan"),
    # `python -m genscl_jax.export` checks its arguments before JAX, flax and orbax load, so a typo costs no wait.
    ("genscl_jax.workdirs.export", "genscl_jax.models.torch_conversion"),
    ("genscl_jax.workdirs.export", "genscl_jax.workdirs.trained_network"),
    ("genscl_jax.workdirs.export", "genscl_jax.workdirs.input_contract"),
    ("genscl_jax.workdirs.export", "genscl_jax.runtime.console"),  # --verbose; the console imports JAX
    ("genscl_jax.workdirs.export", "genscl_jax.training.checkpointing"),
    ("genscl_jax.workdirs.export", "genscl_jax.models"),
    ("genscl_jax.workdirs.export", "genscl_jax.models.model_builder"),
    # `genscl_jax.load_encoder` without importing JAX models at `import genscl_jax`.
    ("genscl_jax", "genscl_jax.workdirs.trained_network"),
    # `from genscl_jax import losses, mixing` (SupContrast's short import) without importing JAX at `import genscl_jax`.
    ("genscl_jax", "genscl_jax.objectives.losses"), ("genscl_jax", "genscl_jax.objectives.mixing"),
    # The bench's real-input mode (TensorFlow's tf.data over JPEGs); the device-only step bench runs without it.
    ("genscl_jax.tools.bench", "genscl_jax.tools.pipeline_bench"),
}


def module_name(path):
    rel = os.path.relpath(path, os.path.join(ROOT, "..")).removesuffix(".py").replace(os.sep, ".")
    return rel.removesuffix(".__init__")


def imports(path, prefix="genscl_jax"):
    """(imported module, at top level?) for every import starting with `prefix` in the file."""
    tree = ast.parse(open(path).read())
    top_level = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(prefix):
            names = [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        for name in names:
            if name.startswith(prefix):
                found.append((name, id(node) in top_level))
    return found


def all_modules():
    modules = {}
    for folder, _, files in os.walk(ROOT):
        for f in files:
            if f.endswith(".py"):
                modules[module_name(os.path.join(folder, f))] = os.path.join(folder, f)
    return modules


def graph():
    modules = all_modules()
    edges = {}
    for name, path in modules.items():
        for imported, top in imports(path):
            while imported not in modules and "." in imported:  # `from pkg import function` -> pkg
                imported = imported.rsplit(".", 1)[0]
            if imported in modules and imported != name:
                edges.setdefault(name, {})[imported] = edges.get(name, {}).get(imported, False) or top
    return modules, edges


def layer_of(module):
    """The LAYERS key a module belongs to: its sub-package ("trainers"), or "config.defaults" and its siblings."""
    parts = module.split(".")[1:]
    if not parts:
        return ""
    if parts[0] == "config" and len(parts) > 1:
        return f"config.{parts[1]}"
    return parts[0]


def may_import(importer_layer, imported_layer):
    allowed = LAYERS[importer_layer] | {importer_layer}
    return any(imported_layer == a or imported_layer.startswith(a + ".") or a.startswith(imported_layer + ".")
               for a in allowed)


def test_every_module_has_a_layer():
    unknown = sorted(m for m in all_modules() if layer_of(m) not in LAYERS)
    assert not unknown, f"modules outside the layers of tests/test_layering.py: {unknown}"


def test_imports_run_down_the_layers():
    _, edges = graph()
    upward = sorted((a, b) for a, targets in edges.items() for b in targets
                    if layer_of(a) != layer_of(b) and not may_import(layer_of(a), layer_of(b)))
    assert not upward, f"imports against the layers: {upward}"


def test_the_library_never_imports_tools():
    _, edges = graph()
    found = sorted((a, b) for a, targets in edges.items() for b in targets
                   if layer_of(b) == "tools" and layer_of(a) not in ("tools", "bench", "study", "plan"))
    assert not found, found


def test_objectives_import_only_jax_and_optax():
    allowed = {"jax", "optax", "numpy", "math", "functools", "dataclasses", "typing", "__future__"}
    for name, path in all_modules().items():
        if layer_of(name) != "objectives":
            continue
        tree = ast.parse(open(path).read())
        for node in ast.walk(tree):
            roots = []
            if isinstance(node, ast.Import):
                roots = [a.name.split(".")[0] for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                roots = [node.module.split(".")[0]]
            for root in roots:
                if root == "genscl_jax":
                    continue  # checked by test_imports_run_down_the_layers: only objectives itself
                assert root in allowed, f"{name} imports {root}"


def test_every_sub_package_says_what_it_holds_and_may_import():
    for folder in sorted(os.listdir(ROOT)):
        init = os.path.join(ROOT, folder, "__init__.py")
        if not os.path.isfile(init):
            continue
        doc = ast.get_docstring(ast.parse(open(init).read())) or ""
        assert len(doc.split()) >= 15 and "import" in doc, f"genscl_jax/{folder}/__init__.py: {doc!r}"


def test_no_import_cycles_lazy_imports_included():
    _, edges = graph()
    state, stack = {}, []

    def visit(node):
        state[node] = "active"
        stack.append(node)
        for nxt in edges.get(node, {}):
            if state.get(nxt) == "active":
                cycle = stack[stack.index(nxt):] + [nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = "done"

    for node in list(edges):
        if node not in state:
            visit(node)


def test_lazy_imports_are_the_listed_ones():
    _, edges = graph()
    lazy = {(a, b) for a, targets in edges.items() for b, top in targets.items() if not top}
    # A parent package importing its own submodule lazily is how a package keeps its import cheap.
    assert lazy <= ALLOWED_LAZY, sorted(lazy - ALLOWED_LAZY)


def test_trainers_do_not_import_each_other():
    _, edges = graph()
    trainers = {"genscl_jax.trainers.pretrain", "genscl_jax.trainers.supervised", "genscl_jax.trainers.linear_eval"}
    for trainer in trainers:
        assert not set(edges.get(trainer, {})) & (trainers - {trainer}), (trainer, edges.get(trainer))
