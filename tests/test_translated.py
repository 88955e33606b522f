"""+IT from pre-translated source images (source.translated_root) instead of FDA."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from fixtures_data import write_gta5_tree
from uncerda_core.artifacts import UncerdaError
from uncerda_core.config import check_data_roots, load_config
from uncerda_core.data import readers
from uncerda_core.data.index import build_index, read_index, with_translated_images, write_index

REPO = Path(__file__).resolve().parent.parent


def _translate_folder(source: Path, out: Path, skip: tuple[str, ...] = ()) -> Path:
    """A stand-in translation: every source image inverted, saved under its own file name."""
    out.mkdir(parents=True, exist_ok=True)
    for image in sorted((source / "images").glob("*.png")):
        if image.name not in skip:
            Image.fromarray(255 - np.asarray(Image.open(image).convert("RGB"))).save(out / image.name)
    return out


def test_translated_images_by_file_name(tmp_path):
    write_gta5_tree(tmp_path / "gta5", 3)
    images = [s.image for s in readers.list_samples("gta5", tmp_path / "gta5", "all")]
    translated = _translate_folder(tmp_path / "gta5", tmp_path / "it")
    assert readers.translated_images(images, translated) == [str(translated / f"0000{i}.png") for i in (1, 2, 3)]
    with pytest.raises(UncerdaError, match=r"source\.translated_root: folder '.*nowhere' does not exist"):
        readers.translated_images(images, tmp_path / "nowhere")
    (translated / "00002.png").unlink()
    with pytest.raises(UncerdaError, match=r"1 of 3 source images have no file of the same name(.|\n)*00002\.png"):
        readers.translated_images(images, translated)


def test_index_table_keeps_labels_and_reads_translated_images(tmp_path):
    write_gta5_tree(tmp_path / "gta5", 2)
    write_index(build_index("gta5", tmp_path / "gta5", "all", workers=1, progress=False), tmp_path / "i.csv", {})
    table = read_index(tmp_path / "i.csv")
    translated = with_translated_images(table, _translate_folder(tmp_path / "gta5", tmp_path / "it"))
    assert list(translated["image"]) == [str(tmp_path / "it" / "00001.png"), str(tmp_path / "it" / "00002.png")]
    assert list(translated["label"]) == list(table["label"]) and list(table["image"])[0].endswith("images/00001.png")


def _config(tmp_path: Path, translated_root: str | None) -> dict:
    return load_config(REPO / "config.yaml", overrides={
        "demo": {"enabled": False}, "source": {"root": str(tmp_path / "gta5"), "translated_root": translated_root},
        "target": {"root": str(tmp_path)}}, check_paths=False)


def test_config_check_names_the_key_before_any_job(tmp_path):
    write_gta5_tree(tmp_path / "gta5", 3)
    check_data_roots(_config(tmp_path, None))
    with pytest.raises(UncerdaError, match=r"source\.translated_root: folder .* does not exist"):
        check_data_roots(_config(tmp_path, str(tmp_path / "missing")))
    _translate_folder(tmp_path / "gta5", tmp_path / "it", skip=("00003.png",))
    with pytest.raises(UncerdaError, match=r"source\.translated_root: 1 of 3(.|\n)*00003\.png"):
        check_data_roots(_config(tmp_path, str(tmp_path / "it")))
    _translate_folder(tmp_path / "gta5", tmp_path / "it")
    check_data_roots(_config(tmp_path, str(tmp_path / "it")))
    # the demo's source does not exist yet: the folder is checked, the names when training starts
    demo = load_config(REPO / "config.yaml", overrides={"source": {"translated_root": str(tmp_path / "none")}},
                       check_paths=False)
    with pytest.raises(UncerdaError, match=r"source\.translated_root: folder .* does not exist"):
        check_data_roots(demo)


def test_it_rung_reads_the_translated_images_and_skips_fda(tmp_path, monkeypatch):
    """End to end on generated data: +IT trains on the translated files, +AA on the originals, neither on FDA."""
    from uncerda_core.data.demo import generate_demo
    from uncerda_core.train import loop
    root = tmp_path
    generate_demo(root / "source", root / "target", seed=0, size=(64, 32), n_source=4, n_target_train=2,
                  n_target_val=1, progress=False)
    write_index(build_index("gta5", root / "source", "all", workers=1, progress=False), root / "source.csv", {})
    write_index(build_index("cityscapes", root / "target", "train", require_labels=False, workers=1,
                            progress=False), root / "target.csv", {})
    translated = _translate_folder(root / "source", root / "translated")
    config = load_config(REPO / "config.yaml", REPO / "workflow/presets/smoke.yaml", overrides={
        "device": "cpu", "threads": 1, "source": {"root": str(root / "source"), "translated_root": str(translated)},
        "target": {"root": str(root / "target")}, "adapt": {"iterations": 2, "image_translation": True}})
    read = []
    original_read_image = readers.read_image
    monkeypatch.setattr(readers, "read_image", lambda path: read.append(Path(path).parent) or original_read_image(path))

    def no_fda(*args, **kwargs):
        raise AssertionError("FDA must not run when source.translated_root is set")
    monkeypatch.setattr(loop, "fda_translate", no_fda)

    for variant, image_translation, source_folder in (("aa_it", True, translated), ("aa", False, root / "source" / "images")):
        read.clear()
        settings = loop.stage_settings(config, "aa", image_translation=image_translation)
        assert settings.translated_root == (str(translated) if image_translation else None)
        loop.run_training(config, settings, root / variant / "checkpoint.pt", seed=0, source_dataset="gta5",
                          source_index=root / "source.csv", target_index=root / "target.csv", progress=False)
        source_reads = {folder for folder in read if "target" not in folder.parts}
        assert source_reads == {source_folder}, variant
    assert loop.stage_settings(config, "st").translated_root == str(translated)
    assert loop.stage_settings(config, "source_only").translated_root is None
