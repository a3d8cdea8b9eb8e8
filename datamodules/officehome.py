"""Office-Home (Venkateswara et al., CVPR 2017): four domains, 65 shared object classes.

Reads the archive as distributed (`OfficeHomeDataset_10072016/<Domain>/<Class>/<NNNNN>.jpg`),
with the Real World folder named `Real World` (original) or `Real_World` (repackagings), and
ignores stray files (`ImageInfo.csv`, `imagelist.txt`, `.DS_Store`, `Thumbs.db`).
"""

from __future__ import annotations

from pathlib import Path

from datamodules.base import MultiDomainDataModule
from datamodules.data.layout import DatasetLayoutError, DomainSource
from datamodules.demo import DEMO_DOMAINS, ensure_officehome_demo
from datamodules.generated import GeneratedData

OFFICEHOME_DOMAINS = ("Art", "Clipart", "Product", "Real World")

# Folder names each domain is found under, in order of preference.
_FOLDER_ALIASES = {"Real World": ("Real World", "Real_World", "RealWorld")}

OFFICEHOME_HELP = (
    "Office-Home cannot be downloaded here. Get `OfficeHomeDataset_10072016.zip` from "
    "https://www.hemanthdv.org/officeHomeDataset.html, unzip it, and pass the folder that holds "
    "Art/, Clipart/, Product/ and 'Real World'/ as `--data.init_args.root` (expected layout: "
    "<root>/<Domain>/<Class>/<NNNNN>.jpg, 65 class folders per domain). To try the pipeline "
    "without it: python -m experiments.officehome fit --config configs/officehome/demo.yaml"
)


def canonical_domain_name(name: str, known: tuple[str, ...] | list[str]) -> str:
    """Match a user-written domain name to a known one (`Real_World` -> `Real World`)."""
    key = name.replace("_", " ").strip().lower()
    for candidate in known:
        if candidate.lower() == key or candidate.replace(" ", "").lower() == key.replace(" ", ""):
            return candidate
    raise ValueError(f"unknown domain {name!r}; valid choices: {list(known)}")


class OfficeHomeDataModule(MultiDomainDataModule):
    """Office-Home in its published layout; multi-domain or leave-one-domain-out."""

    dataset_name = "officehome"
    known_domains: tuple[str, ...] = OFFICEHOME_DOMAINS

    def __init__(
        self,
        root: str,
        domains: list[str] | None = None,
        held_out_domains: list[str] | None = None,
        **kwargs,
    ) -> None:
        """Office-Home DataModule.

        Args:
            root: folder holding the domain folders (`OfficeHomeDataset_10072016`).
            domains: the domains to use (default: all four), e.g. `[Art, Clipart]`.
            held_out_domains: domains only evaluated (leave-one-domain-out), e.g. `[Art]`.
            **kwargs: the shared split, augmentation and loader settings of
                `MultiDomainDataModule`.
        """
        known = self.known_domains
        self.selected_domains = [canonical_domain_name(d, known) for d in (domains or known)]
        held_out = [canonical_domain_name(d, known) for d in (held_out_domains or [])]
        not_selected = sorted(set(held_out) - set(self.selected_domains))
        if not_selected:
            raise ValueError(
                f"held_out_domains {not_selected} are not among domains {self.selected_domains}"
            )
        super().__init__(root=root, held_out_domains=held_out, **kwargs)

    def domain_sources(self) -> list[DomainSource]:
        root = Path(self.root).expanduser()
        if not root.is_dir():
            raise DatasetLayoutError(f"Office-Home root {root} does not exist. {OFFICEHOME_HELP}")
        sources = []
        for domain in self.selected_domains:
            aliases = _FOLDER_ALIASES.get(domain, (domain,))
            folder = next((root / alias for alias in aliases if (root / alias).is_dir()), None)
            if folder is None:
                tried = ", ".join(repr(alias) for alias in aliases)
                raise DatasetLayoutError(
                    f"Office-Home domain {domain!r} not found in {root} (looked for folder "
                    f"{tried}). {OFFICEHOME_HELP}"
                )
            sources.append(DomainSource(name=domain, root=str(folder)))
        return sources


class OfficeHomeDemoDataModule(GeneratedData, OfficeHomeDataModule):
    """Generated Office-Home-like data (shapes in four styles), created on first use.

    Same layout and code path as the real dataset: class is shape, domain is drawing style.
    """

    dataset_name = "officehome"
    known_domains: tuple[str, ...] = DEMO_DOMAINS
    demo_generator = staticmethod(ensure_officehome_demo)

    def __init__(
        self,
        root: str | None = None,
        demo_classes: int = 6,
        images_per_class: int = 40,
        demo_image_size: int = 96,
        demo_seed: int = 0,
        cache_dir: str | None = None,
        **kwargs,
    ) -> None:
        """Office-Home demo DataModule.

        Args:
            root: where the demo data is (default: generated into the cache folder).
            demo_classes: number of shape classes to generate.
            images_per_class: images per class and domain.
            demo_image_size: side of the generated images.
            demo_seed: seed of the generator.
            cache_dir: cache folder (default: $STYLEBENCH_DATA_DIR or ~/.cache/stylebench).
            **kwargs: the settings of `OfficeHomeDataModule`.
        """
        self.use_generated_data(
            cache_dir,
            num_classes=demo_classes,
            images_per_class=images_per_class,
            image_size=demo_image_size,
            seed=demo_seed,
        )
        super().__init__(root=root, **kwargs)
