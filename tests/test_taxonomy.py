import copy

import pytest
import yaml

from pcb import taxonomy


def test_taxonomy_file_matches_the_seed_rules():
    tax = taxonomy.load()
    assert len(tax.classes) == 12
    v = {c.name: c.verdict.name for c in tax.classes}
    assert v["damaged_pad"] == v["spurious_copper"] == "discard"
    for c in ("open_circuit", "short", "cold_joint", "solder_bridge", "insufficient_solder"):
        assert v[c] == "solder_defect"
    assert v["missing_component"] == v["misaligned_component"] == "component_defect"
    for c in ("mouse_bite", "spur", "pin_hole"):
        assert v[c] == "normal"
    labels = {x.name: x.label for x in tax.verdicts}
    assert labels == {"normal": "정상", "review": "검토", "component_defect": "부품불량", "solder_defect": "납땜불량",
                      "discard": "폐기"}
    gpio = {x.name: (x.gpio.pin, x.gpio.duration_ms) for x in tax.verdicts}
    assert gpio == {"discard": (22, 500), "solder_defect": (27, 500), "component_defect": (17, 500),
                    "review": (24, 400), "normal": (23, 300)}
    assert len({pin for pin, _ in gpio.values()}) == len(gpio)  # one sorter pin per verdict
    # severity order: discard > solder > component > review (the anomaly model's) > normal
    assert [x.name for x in tax.verdicts] == ["normal", "review", "component_defect", "solder_defect", "discard"]
    assert tax.no_detection.name == "normal" and tax.no_detection_confidence == 1.0
    assert tax.anomaly.name == "review"


def _doc():
    with open(taxonomy.TAXONOMY_FILE, encoding="utf-8") as f:
        return yaml.safe_load(f)


def test_class_without_category_is_refused():
    doc = _doc()
    doc["classes"].append("tombstone")
    with pytest.raises(ValueError, match="tombstone"):
        taxonomy.parse(doc)


def test_class_in_two_categories_is_refused():
    doc = _doc()
    doc["categories"]["solder"]["classes"].append("damaged_pad")
    with pytest.raises(ValueError, match="two categories"):
        taxonomy.parse(doc)


def test_severity_gaps_are_refused():
    doc = copy.deepcopy(_doc())
    doc["verdicts"]["discard"]["severity"] = 7
    with pytest.raises(ValueError, match="severities"):
        taxonomy.parse(doc)


def test_stored_codes_follow_the_names_after_the_review_verdict_moved_them(tmp_path):
    """Rows written before `review` existed carry the old codes (component 1, solder 2,
    discard 3); migration 0009 rewrites them from the names."""
    from alembic import command
    from sqlalchemy import create_engine, text

    from store.migrate import alembic_config

    url = f"sqlite:///{tmp_path / 'old.db'}"
    cfg = alembic_config(url)
    command.upgrade(cfg, "0008")
    engine = create_engine(url)
    old = {"normal": 0, "component_defect": 1, "solder_defect": 2, "discard": 3}
    with engine.begin() as c:
        for i, (name, code) in enumerate(old.items()):
            c.execute(text("INSERT INTO inspections (id, board_id, device_id, camera_side, verdict, verdict_code, "
                           "confidence, board_verdict, board_verdict_code, pairing, created_at) VALUES "
                           "(:id, 'B', 'pi', 'left', :v, :c, 1.0, :v, :c, 'single', '2026-11-23 10:00:00')"),
                      {"id": f"r{i}", "v": name, "c": code})
    command.upgrade(cfg, "head")
    with engine.begin() as c:
        rows = dict(c.execute(text("SELECT verdict, verdict_code FROM inspections")).all())
        boards = dict(c.execute(text("SELECT board_verdict, board_verdict_code FROM inspections")).all())
    engine.dispose()
    want = {v.name: v.code for v in taxonomy.load().verdicts if v.name in old}
    assert rows == boards == want == {"normal": 0, "component_defect": 2, "solder_defect": 3, "discard": 4}
