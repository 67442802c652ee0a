"""The `Dataset` record every reader returns, whatever the layout on disk."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from segpipe.data.case import Case


@dataclass
class Dataset:
    """A dataset's cases and declared facts, whatever the layout it came from.

    Attributes:
        root: the folder that was read.
        name: a human-readable name (dataset.json `name`, else the folder name).
        modalities: channel names in channel order.
        labels: label value -> name, as the loaded label maps use them (after
            `label_mapping`), 0 being background.
        training: labelled cases.
        test: held-out cases, without labels or with held-out ones (`test_labels/`,
            `labelsTs/`).
        layout: the name of the layout that produced it (`segpipe.data.layouts.LAYOUTS`);
            `segpipe.data.loading.monai_reader` turns it into the MONAI reader to load its
            files with.
        spatial_dims: 3 for volumes, 2 for slices.
        label_mapping: source value -> target value applied to label maps when loading
            (e.g. BraTS 1/2/4 -> MSD 2/1/3); None means the values are used as stored.
            A mapping lists every stored non-zero value; `verify_dataset` reports others.
        folds: case_id -> fold index given by the dataset itself (figshare `cvind.mat`),
            or None.
    """

    root: Path
    name: str
    modalities: list[str]
    labels: dict[int, str]
    training: list[Case]
    test: list[Case] = field(default_factory=list)
    layout: str = "decathlon"
    spatial_dims: int = 3
    label_mapping: dict[int, int] | None = None
    folds: dict[str, int] | None = None

    def __post_init__(self) -> None:
        from segpipe.limits import check_label_value

        for value in [*self.labels, *(self.label_mapping or {}).values()]:
            check_label_value(value, self.root)

    @property
    def cases(self) -> list[Case]:
        """Training then test cases."""
        return [*self.training, *self.test]
