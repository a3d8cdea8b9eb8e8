"""VLCS (Fang et al., "Unbiased Metric Learning", ICCV 2013; as packaged by DomainBed): four
photo datasets as domains (`Caltech101`, `LabelMe`, `SUN09`, `VOC2007`; DomainBed's C, L, S,
V), five classes (`bird`, `car`, `chair`, `dog`, `person`), 10,729 images (Caltech101 1,415,
LabelMe 2,656, SUN09 3,282, VOC2007 3,376), `.jpg` named by a 32-hex-digit id.

Read in the layout of DomainBed's prebuilt `VLCS.tar.gz` (`VLCS/<domain>/<class>/<id>.jpg`),
the only layout with these folder names (DomainBed's download script extracts it unchanged);
see `datamodules/domainbed.py` for what is shared. VLCS has no official split lists in this
form, so the split is DomainBed's seeded 20% holdout.
"""

from __future__ import annotations

from datamodules.data.domainbed_facts import VLCS
from datamodules.demo.domainbed import ensure_vlcs_demo
from datamodules.domainbed import DomainBedImageFolderDataModule
from datamodules.generated import GeneratedData


class VLCSDataModule(DomainBedImageFolderDataModule):
    """VLCS in DomainBed's layout; the seeded holdout split."""

    dataset_name = "vlcs"
    facts = VLCS


class VLCSDemoDataModule(GeneratedData, VLCSDataModule):
    """A generated VLCS copy (the demo shapes in four styles, real folder names), created on
    first use; the same code path as the real dataset."""

    demo_generator = staticmethod(ensure_vlcs_demo)

    def __init__(
        self,
        root: str | None = None,
        demo_classes: int = 5,
        images_per_class: int = 12,
        demo_image_size: int = 64,
        demo_seed: int = 0,
        cache_dir: str | None = None,
        **kwargs,
    ) -> None:
        """VLCS demo DataModule.

        Args:
            root: where the copy is (default: generated into the cache folder).
            demo_classes: the first `demo_classes` of the real classes (1..5).
            images_per_class: images per class and domain.
            demo_image_size: side of the generated images.
            demo_seed: seed of the generator.
            cache_dir: cache folder (default: $STYLEBENCH_DATA_DIR or ~/.cache/stylebench).
            **kwargs: the settings of `VLCSDataModule`.
        """
        self.use_generated_data(
            cache_dir,
            num_classes=demo_classes,
            images_per_class=images_per_class,
            image_size=demo_image_size,
            seed=demo_seed,
        )
        super().__init__(root=root, **kwargs)
