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
