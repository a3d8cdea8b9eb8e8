"""Generated demo data: stand-ins for Office-Home, the cue-conflict stimuli and DTD, written in
the published layouts so the demos run through the same code paths as the real datasets.

- `officehome`: textured shapes (class = shape + texture) in four drawing styles (the domains);
- `cue_conflict`: every shape with every class's texture, in Geirhos et al.'s layout;
- `dtd`: procedural texture classes with DTD's images/ and labels/ (ten partitions);
- `cifar`: CIFAR-10/100 python archives (pickled batches) of the demo shapes at 32 px;
- `domainbed`, `mnist`: PACS, VLCS, TerraIncognita and DomainNet copies in their real layouts
  (drawn by `domainbed_render`), and MNIST IDX files for RotatedMNIST and ColoredMNIST;
- `cache`: each set generated once per settings into `$STYLEBENCH_DATA_DIR` (default
  `~/.cache/stylebench`), atomically;
- `drawing`: the drawing library they all share; `shapes`, `styles`, `objects`: the textured
  object model of the first two.

    python -m datamodules.demo officehome --root /tmp/oh --grid grid.png
"""

from datamodules.data.cache import default_cache_dir
from datamodules.demo.cache import COMPLETE_MARKER
from datamodules.demo.cifar import (
    CIFAR_DEMO_VERSION,
    ensure_cifar10_demo,
    ensure_cifar100_demo,
    generate_cifar10_demo,
    generate_cifar100_demo,
)
from datamodules.demo.cue_conflict import (
    ensure_cue_conflict_demo,
    generate_cue_conflict_demo,
    save_cue_conflict_grid,
)
from datamodules.demo.domainbed import (
    ensure_domainnet_demo,
    ensure_pacs_demo,
    ensure_terra_incognita_demo,
    ensure_vlcs_demo,
    generate_domainnet_demo,
    generate_pacs_demo,
    generate_terra_incognita_demo,
    generate_vlcs_demo,
)
from datamodules.demo.dtd import (
    DTD_DEMO_CLASSES,
    DTD_DEMO_PATTERNS,
    DTD_DEMO_VERSION,
    DTD_NUM_PARTITIONS,
    DTD_SPLITS,
    ensure_dtd_demo,
    generate_dtd_demo,
    partition_split,
    render_texture,
    save_dtd_grid,
)
from datamodules.demo.mnist import ensure_mnist_demo, generate_mnist_demo
from datamodules.demo.objects import (
    DEMO_DATA_VERSION,
    DEMO_TEXTURES,
    SurfaceAppearance,
    render_object,
)
from datamodules.demo.officehome import (
    ensure_officehome_demo,
    generate_officehome_demo,
    save_officehome_grid,
)
from datamodules.demo.shapes import DEMO_CLASSES, ObjectGeometry
from datamodules.demo.styles import DEMO_DOMAINS, RENDER_STYLES

__all__ = [
    "CIFAR_DEMO_VERSION",
    "COMPLETE_MARKER",
    "DEMO_CLASSES",
    "DEMO_DATA_VERSION",
    "DEMO_DOMAINS",
    "DEMO_TEXTURES",
    "DTD_DEMO_CLASSES",
    "DTD_DEMO_PATTERNS",
    "DTD_DEMO_VERSION",
    "DTD_NUM_PARTITIONS",
    "DTD_SPLITS",
    "RENDER_STYLES",
    "ObjectGeometry",
    "SurfaceAppearance",
    "default_cache_dir",
    "ensure_cifar10_demo",
    "ensure_cifar100_demo",
    "ensure_cue_conflict_demo",
    "ensure_domainnet_demo",
    "ensure_dtd_demo",
    "ensure_mnist_demo",
    "ensure_officehome_demo",
    "ensure_pacs_demo",
    "ensure_terra_incognita_demo",
    "ensure_vlcs_demo",
    "generate_cifar10_demo",
    "generate_cifar100_demo",
    "generate_cue_conflict_demo",
    "generate_domainnet_demo",
    "generate_dtd_demo",
    "generate_mnist_demo",
    "generate_officehome_demo",
    "generate_pacs_demo",
    "generate_terra_incognita_demo",
    "generate_vlcs_demo",
    "partition_split",
    "render_object",
    "render_texture",
    "save_cue_conflict_grid",
    "save_dtd_grid",
    "save_officehome_grid",
]
