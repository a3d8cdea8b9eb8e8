"""The published facts of DomainBed's image datasets (Gulrajani & Lopez-Paz, "In Search of Lost
Domain Generalization", ICLR 2021): folder names as distributed, classes, DomainBed's
environment names, where to get each archive. The DataModules, the demo generators and the docs
(`docs/datasets_domainbed.md`) read them from here, so a name exists once.

Sources: DomainBed's `domainbed/datasets.py` and `domainbed/scripts/download.py`, the datasets'
own pages and archives, and the loaders of Dassl.pytorch and the Transfer-Learning-Library for
the official split-list formats. What is only third-party is marked in the docs.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ImageFolderFacts:
    """One DomainBed image-folder dataset: `<root>/<domain>/<class>/<image>`.

    Args:
        title: the dataset's name in messages.
        domains: the domain folders as distributed, in DomainBed's order (sorted by name: the
            environment index `i` of DomainBed's `--test_envs i` is the position here).
        environments: DomainBed's `ENVIRONMENTS` names of the same domains (accepted as aliases).
        classes: the class folders (sorted: label = index), or None where the list is too long
            to carry (DomainNet's 345; read from the folders).
        image_folders: sub-folders of `root` the domain folders may be found in, tried after
            `root` itself: the archive's own folder and the one DomainBed's download script
            leaves (`<data_dir>/<subdir>/`).
        how_to_get: where the data comes from and how to lay it out, for error messages.
    """

    title: str
    domains: tuple[str, ...]
    environments: tuple[str, ...]
    classes: tuple[str, ...] | None
    image_folders: tuple[str, ...]
    how_to_get: str


PACS = ImageFolderFacts(
    title="PACS",
    domains=("art_painting", "cartoon", "photo", "sketch"),
    environments=("A", "C", "P", "S"),
    classes=("dog", "elephant", "giraffe", "guitar", "horse", "house", "person"),
    # `kfold/` as distributed; DomainBed renames it `PACS/`; Dassl keeps it as `images/`.
    image_folders=("kfold", "PACS", "images", "pacs/images"),
    how_to_get=(
        "PACS cannot be downloaded here. Get it from the authors' page "
        "http://www.eecs.qmul.ac.uk/~dl307/project_iccv2017 (also linked from "
        "https://domaingeneralization.github.io/): the image folder `kfold/` and, for "
        "`split: official`, the lists <domain>_{train,crossval,test}_kfold.txt; or run "
        "DomainBed's `python -m domainbed.scripts.download --data_dir <dir>`, which unzips "
        "PACS.zip (Google Drive id 1JFr8f805nMUelQWWmfnJR3y4_SYoN5Pd) and renames kfold/ to "
        "PACS/. Pass the folder holding art_painting/, cartoon/, photo/ and sketch/ (or its "
        "parent holding kfold/ or PACS/) as `--data.init_args.root`."
    ),
)

VLCS = ImageFolderFacts(
    title="VLCS",
    domains=("Caltech101", "LabelMe", "SUN09", "VOC2007"),
    environments=("C", "L", "S", "V"),
    classes=("bird", "car", "chair", "dog", "person"),
    image_folders=("VLCS",),
    how_to_get=(
        "VLCS cannot be downloaded here. Get DomainBed's prebuilt VLCS.tar.gz (Google Drive id "
        "1skwblH1_okBwxWxmRsp9_qi15hyPpxg8, what `python -m domainbed.scripts.download "
        "--data_dir <dir>` extracts) and pass the folder holding Caltech101/, LabelMe/, SUN09/ "
        "and VOC2007/ (or its parent holding VLCS/) as `--data.init_args.root`. Dassl's "
        "CALTECH/LABELME/PASCAL/SUN layout with numbered class folders is not read."
    ),
)

TERRA_INCOGNITA = ImageFolderFacts(
    title="TerraIncognita",
    # Sorted as strings, as DomainBed sorts them: 100 < 38 < 43 < 46.
    domains=("location_100", "location_38", "location_43", "location_46"),
    environments=("L100", "L38", "L43", "L46"),
    classes=(
        "bird",
        "bobcat",
        "cat",
        "coyote",
        "dog",
        "empty",
        "opossum",
        "rabbit",
        "raccoon",
        "squirrel",
    ),
    image_folders=("terra_incognita",),
    how_to_get=(
        "TerraIncognita cannot be downloaded here. It is DomainBed's subset of Caltech Camera "
        "Traps (https://lila.science/datasets/caltech-camera-traps): get "
        "https://storage.googleapis.com/public-datasets-lila/caltechcameratraps/"
        "eccv_18_all_images_sm.tar.gz and .../caltechcameratraps/eccv_18_annotations.tar.gz, "
        "extract both into one folder (giving eccv_18_all_images_sm/ and "
        "eccv_18_annotation_files/), then build DomainBed's layout with `python -m "
        "experiments.build_terra_incognita --source <that folder> --dest <data>/terra_incognita`"
        " (or run DomainBed's download script). Pass the folder holding location_100/, "
        "location_38/, location_43/ and location_46/ (or its parent holding terra_incognita/) "
        "as `--data.init_args.root`."
    ),
)

#: DomainNet's download folder; the official lists are `<DOMAINNET_TXT_URL>/<domain>_<split>.txt`.
DOMAINNET_URL = "http://csr.bu.edu/ftp/visda/2019/multi-source"
DOMAINNET_TXT_URL = f"{DOMAINNET_URL}/domainnet/txt"
#: Archives per domain (clipart and painting under `groundtruth/`: the others are VisDA
#: challenge copies with another layout).
DOMAINNET_ARCHIVES = {
    "clipart": f"{DOMAINNET_URL}/groundtruth/clipart.zip",
    "infograph": f"{DOMAINNET_URL}/infograph.zip",
    "painting": f"{DOMAINNET_URL}/groundtruth/painting.zip",
    "quickdraw": f"{DOMAINNET_URL}/quickdraw.zip",
    "real": f"{DOMAINNET_URL}/real.zip",
    "sketch": f"{DOMAINNET_URL}/sketch.zip",
}

DOMAINNET = ImageFolderFacts(
    title="DomainNet",
    domains=("clipart", "infograph", "painting", "quickdraw", "real", "sketch"),
    environments=("clip", "info", "paint", "quick", "real", "sketch"),
    classes=None,
    image_folders=("domain_net", "domainnet"),
    how_to_get=(
        "DomainNet cannot be downloaded here. Get the six archives "
        + ", ".join(DOMAINNET_ARCHIVES.values())
        + " and unzip them into one folder (each gives <domain>/<class>/<domain>_<CCC>_<N>.jpg); "
        f"for `split: official` also get {DOMAINNET_TXT_URL}/<domain>_{{train,test}}.txt into "
        "that folder (or a `splits/` folder beside the domains, or set `split_dir`). DomainBed's "
        "download script unzips them into <data_dir>/domain_net/ and deletes the files listed "
        "in its domainbed/misc/domain_net_duplicates.txt (pass that file as `duplicates_file` "
        "for the same set). Pass the folder holding the six domain folders (or its parent "
        "holding domain_net/) as `--data.init_args.root`."
    ),
)

#: The number of DomainNet classes in the real archives.
DOMAINNET_NUM_CLASSES = 345
#: Real DomainNet class folders, a few of the 345 (the five that are not plain `[a-z_]` among
#: them): what the demo copy uses, so that it shows the real names' sort-order quirks.
DOMAINNET_EXAMPLE_CLASSES = (
    "aircraft_carrier",
    "animal_migration",
    "The_Eiffel_Tower",
    "The_Great_Wall_of_China",
    "The_Mona_Lisa",
    "teddy-bear",
    "t-shirt",
    "wine_glass",
    "zebra",
    "zigzag",
)

#: The MNIST files torchvision reads from `<root>/MNIST/raw/` (also accepted with `.gz`).
MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

MNIST_HOW_TO_GET = (
    "MNIST cannot be downloaded here. Get train-images-idx3-ubyte.gz, "
    "train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and t10k-labels-idx1-ubyte.gz from "
    "https://ossci-datasets.s3.amazonaws.com/mnist/ (or http://yann.lecun.com/exdb/mnist/), "
    "or let `torchvision.datasets.MNIST(<root>, download=True)` fetch them elsewhere, and put "
    "them (gzipped or not) in <root>/MNIST/raw/; pass <root> as `--data.init_args.root`. "
    "DomainBed's download script leaves them in <data_dir>/MNIST/MNIST/raw/, also found."
)
