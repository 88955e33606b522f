"""benchmarks/sampling_reach.py: the S_k pixel share of replayed source batches."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from benchmark_helpers import load_benchmark
from fixtures_data import demo_setup
from uncerda_core.data.class_stats import compute_class_stats
from uncerda_core.data.datasets import BatchStream, ImageSettings, SegmentationDataset
from uncerda_core.data.index import read_index
from uncerda_core.data.labels import CLASS_NAMES, NUM_CLASSES

reach = load_benchmark("sampling_reach")


def test_counts_and_share_by_hand():
    labels = [np.array([[0, 0, 255]]), np.array([[3, 1], [1, 255]])]
    counts = reach.class_pixel_counts(labels)
    expected = np.zeros(NUM_CLASSES, dtype=np.int64)
    expected[[0, 1, 3]] = [2, 2, 1]
    np.testing.assert_array_equal(counts, expected)
    assert reach.sk_share(counts, [3]) == pytest.approx(1 / 5)
    assert reach.sk_share(counts, [1, 3]) == pytest.approx(3 / 5)
    assert np.isnan(reach.sk_share(np.zeros(NUM_CLASSES, dtype=np.int64), [3]))


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("reach")
    _, index, _ = demo_setup(root, 8, 1, 1, "train")
    table = read_index(index)
    stats = compute_class_stats(table, "gta5", workers=1, progress=False)
    stats_path = root / "class_stats.csv"
    stats.to_csv(stats_path, index=False)
    return {"root": root, "index": index, "table": table, "stats": stats, "stats_path": stats_path}


def test_replay_counts_every_drawn_item(source):
    """All draw probability on one image: the replay counts that image's label iterations x batch times
    (the label counts come from the class-statistics stage, another reader of the same files)."""
    table, stats = source["table"], source["stats"]
    probabilities = np.zeros(len(table))
    probabilities[5] = 1.0
    dataset = SegmentationDataset("gta5", table, ImageSettings(), label_source="index", cache=True)
    stream = BatchStream(len(table), 3, 0, 1, probabilities)
    counts = reach.replay_counts(dataset, stream, iterations=4)
    np.testing.assert_array_equal(counts, 12 * stats.loc[5, list(CLASS_NAMES)].to_numpy(dtype=np.int64))


def test_script_reports_every_regime(source, monkeypatch, capsys):
    """End to end: all regimes printed; with all weight on one image, whole-image draws give exactly
    that image's S_k share, and the first regime is its own baseline."""
    root, table, stats = source["root"], source["table"], source["stats"]
    counts = stats[list(CLASS_NAMES)].to_numpy(dtype=np.int64)
    j = int(np.argmax(counts[:, 0] > 0))           # an image holding class 0 (road)
    sk = [0, 3]
    weights = pd.DataFrame({"name": table["name"], "probability": np.eye(len(table))[j]})
    weights.to_csv(root / "weights.csv", index=False)
    rank = pd.DataFrame({"class_id": range(NUM_CLASSES), "class": CLASS_NAMES,
                         "rank": range(1, NUM_CLASSES + 1), "in_sk": [c in sk for c in range(NUM_CLASSES)]})
    rank.to_csv(root / "rank.csv", index=False)
    monkeypatch.setattr("sys.argv", ["sampling_reach", "--source-index", str(source["index"]),
                                     "--class-stats", str(source["stats_path"]), "--weights", str(root / "weights.csv"),
                                     "--rank", str(root / "rank.csv"), "--control-weights", str(root / "weights.csv"),
                                     "--crop", "32", "16", "--iterations", "3", "--batch-size", "2"])
    reach.main()
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ")[1:] for line in capsys.readouterr().out.splitlines()
            if line.startswith("| ") and not line.startswith("| regime")}
    assert list(rows) == ["uniform, whole images", "weights, whole images", "+SR control, whole images",
                          "uniform, random crops", "weights, random crops", "weights, crops on S_k",
                          "+SR control, crops on any class"]
    assert rows["uniform, whole images"][1] == "1.00"
    share = 100 * counts[j, sk].sum() / counts[j].sum()
    assert float(rows["weights, whole images"][0]) == pytest.approx(share, abs=0.005)
    assert all(0 <= float(values[0]) <= 100 for values in rows.values())
