"""The package's structure: which module may import which. Imports inside functions count too, so a lazy import
cannot hide a cycle; the few lazy imports that remain are listed with their reason."""

import ast
import os

ROOT = os.path.join(os.path.dirname(__file__), "..", "genscl_jax")

# (importer, imported): deferred on purpose, each for a reason a reader should know.
ALLOWED_LAZY = {
    # The tf.data pipeline (TensorFlow) is loaded only when a tfds dataset is read: synthetic runs, the bench and
    # a bare accelerator VM never import TensorFlow.
    ("genscl_jax.data", "genscl_jax.data.tf_pipeline"),
    # Likewise TensorFlow: measuring an image folder's statistics (once; later runs read them), and the facts of a
    # tfds:NAME dataset, which come from its tfds builder.
    ("genscl_jax.data", "genscl_jax.data.tf_stats"), ("genscl_jax.data", "genscl_jax.data.tfds_by_name"),
    # A registry hook, named by string so the registry itself imports nothing.
    ("genscl_jax.data.registry", "genscl_jax.data.fashion_mnist_offline"),
    # Only the mode that runs is imported: `--mode linear_eval` never builds the pretraining step, and clu's writers
    # (reporting, with TensorBoard) load only when a loop reports.
    ("genscl_jax.runner", "genscl_jax.pretrain"), ("genscl_jax.runner", "genscl_jax.supervised"),
    ("genscl_jax.runner", "genscl_jax.linear_eval"), ("genscl_jax.train_loop", "genscl_jax.reporting"),
    # `python -m genscl_jax.export` checks its arguments before JAX, flax and orbax load, so a typo costs no wait.
    ("genscl_jax.export", "genscl_jax.torch_conversion"), ("genscl_jax.export", "genscl_jax.encoders"),
    ("genscl_jax.export", "genscl_jax.models"), ("genscl_jax.export", "genscl_jax.model_builder"),
    # `genscl_jax.load_encoder` without importing JAX models at `import genscl_jax`.
    ("genscl_jax", "genscl_jax.encoders"),
}


def module_name(path):
    rel = os.path.relpath(path, os.path.join(ROOT, "..")).removesuffix(".py").replace(os.sep, ".")
    return rel.removesuffix(".__init__")


def imports(path):
    """(imported module, at top level?) for every genscl_jax import in the file."""
    tree = ast.parse(open(path).read())
    top_level = {id(node) for node in tree.body}
    found = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("genscl_jax"):
            names = [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            if name.startswith("genscl_jax"):
                found.append((name, id(node) in top_level))
    return found


def graph():
    modules = {}
    for folder, _, files in os.walk(ROOT):
        for f in files:
            if f.endswith(".py"):
                modules[module_name(os.path.join(folder, f))] = os.path.join(folder, f)
    edges = {}
    for name, path in modules.items():
        for imported, top in imports(path):
            while imported not in modules and "." in imported:  # `from pkg import function` -> pkg
                imported = imported.rsplit(".", 1)[0]
            if imported in modules and imported != name:
                edges.setdefault(name, {})[imported] = edges.get(name, {}).get(imported, False) or top
    return modules, edges


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
    trainers = {"genscl_jax.pretrain", "genscl_jax.supervised", "genscl_jax.linear_eval"}
    for trainer in trainers:
        assert not set(edges.get(trainer, {})) & (trainers - {trainer}), (trainer, edges.get(trainer))
