"""Domain layout rules: one class check for both the DataModule and the data check, roles."""

from __future__ import annotations

from pathlib import Path

import pytest

from datamodules.data.layout import (
    DatasetLayoutError,
    DomainData,
    check_domain_roles,
    class_folder_findings,
    shared_class_names,
)


def domains() -> list[DomainData]:
    return [
        DomainData("Art", Path("/d/Art"), {"Bike": ["a.jpg"], "Mug": ["b.jpg"]}),
        DomainData("Clipart", Path("/d/Clipart"), {"Bike": ["c.jpg"], "Pen": ["d.jpg"]}),
    ]


def test_the_datamodule_raises_what_the_check_reports() -> None:
    findings = class_folder_findings(domains())
    assert [f.kind for f in findings] == ["class-mismatch"]
    with pytest.raises(DatasetLayoutError) as error:
        shared_class_names(domains())
    assert findings[0].message in str(error.value) and "/d/Clipart" in str(error.value)
    assert shared_class_names(domains()[:1]) == ["Bike", "Mug"]


@pytest.mark.parametrize(
    ("names", "held_out", "target", "message"),
    [
        (["A", "A", "B"], [], [], r"unique; repeated: \['A'\]"),
        (["A", "B"], ["C"], [], r"held_out_domains \['C'\] are not domains"),
        (["A", "B"], [], ["C"], r"target_domains \['C'\] are not domains"),
        (["A", "B", "C"], ["B"], ["B"], r"\['B'\] are both held out and adaptation targets"),
        (["A", "B"], ["A"], ["B"], "nothing is left to train on"),
    ],
)
def test_domain_roles(names, held_out, target, message) -> None:
    with pytest.raises(ValueError, match=message):
        check_domain_roles(names, held_out, target)
    check_domain_roles(["A", "B", "C"], ["A"], ["B"])  # a valid assignment passes
