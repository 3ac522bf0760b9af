"""Shared test fixtures (helpers they use: tests/helpers.py).

Everything read here is in tests/fixtures/ (see its README): the suite never reaches outside
the repository.
"""
import shutil

import pytest

import leukemia_tf  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
from tests.helpers import REAL_SAMPLES, build_tree


@pytest.fixture
def tiny_tree(tmp_path):
    return build_tree(str(tmp_path / "data"))


@pytest.fixture
def real_tree(tmp_path):
    dst = tmp_path / "real"
    shutil.copytree(REAL_SAMPLES, dst)
    return str(dst / "C-NMC_Leukemia")


def pytest_configure(config):
    """Two logical CPU devices for the whole session, so MirroredStrategy has replicas.

    Runs before any test module is imported, so before TensorFlow initialises its runtime
    (first op). The pytest-xdist controller of `make test` runs no test: it does not load
    TensorFlow at all. (Each worker keeps TensorFlow's default thread pools: one intra-op
    thread per worker measured slower, 10:04 vs 9:33 for the suite on 2 cores.)
    """
    if (getattr(config, "workerinput", None) is None
            and config.getoption("numprocesses", default=None)):
        return
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)


@pytest.fixture(scope="session")
def records_dir(tmp_path_factory):
    """Tiny converted records: 48 training images over 3 folds, 10 validation, 3 test,
    stored at 48 px so training tests run in seconds. Shared by the whole session:
    tests must not modify it."""
    from leukemia_tf.data import convert
    root = tmp_path_factory.mktemp("records")
    tree = build_tree(str(root / "data"), per_class_per_fold=8, n_val=10, n_test=3)
    out = str(root / "rec")
    convert.convert(convert.ConvertConfig(tree, out, image_size=48, num_shards=2,
                                          num_workers=1, progress=False))
    return out


@pytest.fixture(scope="session")
def real_records(tmp_path_factory):
    """The eight real sample images converted at 48 px: the real layout of a copy without
    testing_data/ (7 training images in fold 0, a 1-image validation split, an empty test
    split). Shared by the whole session: tests must not modify it."""
    from leukemia_tf.data import convert
    root = tmp_path_factory.mktemp("real_records")
    shutil.copytree(REAL_SAMPLES, root / "real")
    out = str(root / "rec")
    convert.convert(convert.ConvertConfig(str(root / "real" / "C-NMC_Leukemia"), out,
                                          image_size=48, num_shards=1, num_workers=1,
                                          progress=False))
    return out


@pytest.fixture(scope="session")
def untrained_export(real_records, tmp_path_factory):
    """An untrained 48 px resnet_small exported with the records' preprocessing: enough
    for tests of what prediction and evaluation do around the model."""
    from leukemia_tf import config as C
    from leukemia_tf.data import manifest as manifest_lib
    from leukemia_tf.data.pipeline import parser
    from leukemia_tf.model import export, registry
    md = str(tmp_path_factory.mktemp("untrained") / "m")
    model = registry.build_model(C.ModelConfig(name="resnet_small", width=8), 48)
    export.export_model(model, md, parser.records_spec(manifest_lib.load(real_records), 48))
    return md


@pytest.fixture(scope="session")
def untrained_32(tmp_path_factory):
    """An untrained 32 px resnet_small (width 4, no augmentation, no dropout) exported
    without records: for tests of what loading model files accepts and refuses. Shared by
    the whole session: tests must not modify it (copy it first)."""
    from leukemia_tf import config as C
    from leukemia_tf.model import export, registry
    path = tmp_path_factory.mktemp("exported") / "m"
    model = registry.build_model(C.ModelConfig(name="resnet_small", width=4, dropout=0.0,
                                               augment=C.AugmentConfig(enabled=False)), 32)
    export.export_model(model, str(path))
    return path


def _copy_run(src, dst):
    """A model dir of the test's own: a copy of a session-wide run and its config."""
    from leukemia_tf import config as C
    cfg, path = src
    shutil.copytree(path, dst)
    return C.replace(cfg, train={"model_dir": str(dst)}), dst


@pytest.fixture(scope="session")
def _finished_once(records_dir, tmp_path_factory):
    from leukemia_tf import training
    from tests.helpers import tiny_config
    md = tmp_path_factory.mktemp("finished") / "m"
    cfg = tiny_config(records_dir, md, epochs=1, steps_per_epoch=2)
    assert training.run(cfg)["status"] == "ok"
    return cfg, md


@pytest.fixture
def finished(_finished_once, tmp_path):
    """A finished 1-epoch model dir of the test's own (a copy) and its config."""
    return _copy_run(_finished_once, tmp_path / "m")


@pytest.fixture(scope="session")
def _trained_on_folds_0_1(records_dir, tmp_path_factory):
    from leukemia_tf import config as C, training
    from tests.helpers import tiny_config
    md = tmp_path_factory.mktemp("trained") / "m"
    cfg = C.replace(tiny_config(records_dir, md, epochs=1), data={"train_folds": (0, 1)})
    training.run(cfg)
    return cfg, md


@pytest.fixture(scope="module")
def model_dir(_trained_on_folds_0_1, tmp_path_factory):
    """A model trained one epoch on folds 0 and 1 (fold 2 and validation are unseen), a
    copy per test module: evaluations write into it."""
    return str(_copy_run(_trained_on_folds_0_1, tmp_path_factory.mktemp("model") / "m")[1])


def pytest_collection_modifyitems(config, items):
    """The heaviest tests first: modules holding a test marked slow, and in them the slow
    tests, run before the rest. A module's tests stay together, so its module fixtures
    are built once. Under `make test`'s xdist workers the long tests start early instead
    of ending the run with one core busy and the others idle."""
    def module(item):
        return item.nodeid.split("::")[0]
    heavy = {module(item) for item in items if item.get_closest_marker("slow")}
    rank = {}
    for item in items:
        rank.setdefault(module(item), len(rank))
    items[:] = sorted(items, key=lambda item: (
        module(item) not in heavy, rank[module(item)],
        item.get_closest_marker("slow") is None))
