"""The field's object benchmarks in the on-disk layouts their distributors publish.

Office-31, Office-Home, VisDA-2017 and DomainNet come as image folders plus ``image_list/*.txt`` files of
``<relative path> <label>`` lines: the format TLlib distributes (thuml/Transfer-Learning-Library,
tllib/vision/datasets/{office31,officehome,visda2017,domainnet}.py, read at d7351ac / 9fcd99c / 3dbb12d / 2ba3d7b),
with the same class order. A layout here is data: its domains, which list file holds each split, its classes and its
downloads; one reader serves them all. ``dacl data synth <name>`` writes the same tree with random images.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dacl.data.download import Download, ensure
from dacl.errors import DataError

_TSINGHUA = "https://cloud.tsinghua.edu.cn/f/{}/?dl=1"


@dataclass(frozen=True)
class ImageListLayout:
    name: str
    folder: str  # the dataset's folder under data_root
    classes: tuple[str, ...]
    lists: dict[str, dict[str, str]]  # domain -> split ("train"/"test") -> list file relative to the folder
    image_dirs: dict[str, str]  # domain -> folder its images live in, with {cls} for the class (for the writer)
    downloads: tuple[Download, ...] = ()
    suffix: str = ".jpg"
    image_shape: tuple[int, int] = (300, 300)  # typical (width, height) of its images, for synthetic trees
    transductive: bool = True  # one list per domain: the target's unlabelled training set is its test set
    reference: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def list_file(self, domain: str, split: str) -> str:
        if domain not in self.lists:
            raise DataError(f"{self.name} has no domain '{domain}'; choose one of {', '.join(self.lists)}")
        return self.lists[domain][split]


OFFICE31_CLASSES = (
    "back_pack", "bike", "bike_helmet", "bookcase", "bottle", "calculator", "desk_chair", "desk_lamp", "desktop_computer",
    "file_cabinet", "headphones", "keyboard", "laptop_computer", "letter_tray", "mobile_phone", "monitor", "mouse", "mug",
    "paper_notebook", "pen", "phone", "printer", "projector", "punchers", "ring_binder", "ruler", "scissors", "speaker",
    "stapler", "tape_dispenser", "trash_can")
OFFICEHOME_CLASSES = (  # TLlib's order (the label ids of its image lists), not alphabetical
    "Drill", "Exit_Sign", "Bottle", "Glasses", "Computer", "File_Cabinet", "Shelf", "Toys", "Sink", "Laptop", "Kettle",
    "Folder", "Keyboard", "Flipflops", "Pencil", "Bed", "Hammer", "ToothBrush", "Couch", "Bike", "Postit_Notes", "Mug",
    "Webcam", "Desk_Lamp", "Telephone", "Helmet", "Mouse", "Pen", "Monitor", "Mop", "Sneakers", "Notebook", "Backpack",
    "Alarm_Clock", "Push_Pin", "Paper_Clip", "Batteries", "Radio", "Fan", "Ruler", "Pan", "Screwdriver", "Trash_Can",
    "Printer", "Speaker", "Eraser", "Bucket", "Chair", "Calendar", "Calculator", "Flowers", "Lamp_Shade", "Spoon",
    "Candles", "Clipboards", "Scissors", "TV", "Curtains", "Fork", "Soda", "Table", "Knives", "Oven", "Refrigerator",
    "Marker")
VISDA_CLASSES = ("aeroplane", "bicycle", "bus", "car", "horse", "knife", "motorcycle", "person", "plant", "skateboard",
                 "train", "truck")
# DomainNet's 345 class names (cleaned version) live in its image lists; the writer numbers them.
DOMAINNET_DOMAINS = ("clipart", "infograph", "painting", "quickdraw", "real", "sketch")


def _per_domain(domains: tuple[str, ...], image_dir: str) -> tuple[dict, dict]:
    lists = {d: {"train": f"image_list/{d}.txt", "test": f"image_list/{d}.txt"} for d in domains}
    return lists, {d: image_dir.format(domain=d, cls="{cls}") for d in domains}


_o31_lists, _o31_dirs = _per_domain(("amazon", "dslr", "webcam"), "{domain}/images/{cls}")
_oh_lists, _oh_dirs = _per_domain(("Art", "Clipart", "Product", "Real_World"), "{domain}/{cls}")

LAYOUTS: dict[str, ImageListLayout] = {
    "office31": ImageListLayout(
        "office31", "office31", OFFICE31_CLASSES, _o31_lists, _o31_dirs,
        downloads=(Download(_TSINGHUA.format("2c1dd9fbcaa9455aa4ad"), "image_list.zip", unpacks_to="image_list"),
                   Download(_TSINGHUA.format("ec12dfcddade43ab8101"), "amazon.tgz", unpacks_to="amazon"),
                   Download(_TSINGHUA.format("a41d818ae2f34da7bb32"), "dslr.tgz", unpacks_to="dslr"),
                   Download(_TSINGHUA.format("8a41009a166e4131adcd"), "webcam.tgz", unpacks_to="webcam")),
        image_shape=(300, 300), reference="Saenko et al. 2010; lists: TLlib office31.py (d7351ac)"),
    "officehome": ImageListLayout(
        "officehome", "office-home", OFFICEHOME_CLASSES, _oh_lists, _oh_dirs,
        downloads=(Download(_TSINGHUA.format("ca3a3b6a8d554905b4cd"), "image_list.zip", unpacks_to="image_list"),
                   Download(_TSINGHUA.format("4691878067d04755beab"), "Art.tgz", unpacks_to="Art"),
                   Download(_TSINGHUA.format("0d41e7da4558408ea5aa"), "Clipart.tgz", unpacks_to="Clipart"),
                   Download(_TSINGHUA.format("76186deacd7c4fa0a679"), "Product.tgz", unpacks_to="Product"),
                   Download(_TSINGHUA.format("dee961894cc64b1da1d7"), "Real_World.tgz", unpacks_to="Real_World")),
        image_shape=(300, 250), reference="Venkateswara et al. 2017; lists: TLlib officehome.py (9fcd99c)"),
    "visda2017": ImageListLayout(
        "visda2017", "visda-2017", VISDA_CLASSES,
        {"Synthetic": {"train": "image_list/train.txt", "test": "image_list/train.txt"},
         "Real": {"train": "image_list/validation.txt", "test": "image_list/validation.txt"}},
        {"Synthetic": "train/{cls}", "Real": "validation/{cls}"},
        downloads=(Download(_TSINGHUA.format("c107de37b8094c5398dc"), "image_list.zip", unpacks_to="image_list"),
                   Download(_TSINGHUA.format("c5f3ce59139144ec8221"), "train.tar", unpacks_to="train"),
                   Download(_TSINGHUA.format("da70e4b1cf514ecea562"), "validation.tar", unpacks_to="validation")),
        image_shape=(384, 384), reference="Peng et al. 2017; lists: TLlib visda2017.py (3dbb12d)"),
    "domainnet": ImageListLayout(
        "domainnet", "domainnet", tuple(f"class_{i:03d}" for i in range(345)),
        {d: {"train": f"image_list/{d}_train.txt", "test": f"image_list/{d}_test.txt"} for d in DOMAINNET_DOMAINS},
        {d: f"{d}/{{cls}}" for d in DOMAINNET_DOMAINS},
        downloads=(Download(_TSINGHUA.format("90ecb35bbd374e5e8c41"), "image_list.zip", unpacks_to="image_list"),
                   *(Download(f"http://csr.bu.edu/ftp/visda/2019/multi-source/{'groundtruth/' if d in ('clipart', 'painting') else ''}{d}.zip",
                              f"{d}.zip", unpacks_to=d) for d in DOMAINNET_DOMAINS)),
        image_shape=(256, 256), transductive=False,
        reference="Peng et al. 2019 (cleaned version); lists: TLlib domainnet.py (2ba3d7b)"),
}


def layout(name: str) -> ImageListLayout:
    if name not in LAYOUTS:
        raise DataError(f"unknown image-list benchmark '{name}'; choose one of {', '.join(LAYOUTS)}")
    return LAYOUTS[name]


def dataset_root(lay: ImageListLayout, data_root: str | None, download: bool) -> Path:
    """``<data_root>/<folder>``, downloaded first where asked; a missing tree names the layout it expects."""
    if not data_root:
        raise DataError(f"{lay.name} needs data_root=<folder holding {lay.folder}/> (or download=true with internet); "
                        f"`dacl data synth {lay.name} --out DIR` writes a synthetic tree in its layout")
    root = Path(data_root).expanduser() / lay.folder
    if download:
        ensure(root, list(lay.downloads), lay.name)
    if not (root / "image_list").is_dir():
        some = next(iter(lay.lists.values()))["train"]
        raise DataError(f"{lay.name} not found under {root}: expected {lay.folder}/{some} (lines '<relative path> "
                        f"<label>') and the image folders it names ({lay.reference}); set download=true where internet "
                        f"is available, or `dacl data synth {lay.name} --out {data_root}` for a synthetic tree")
    return root


def read_image_list(root: Path, list_file: str, num_classes: int) -> tuple[list[str], np.ndarray]:
    """``<relative path> <label>`` lines (a path may contain spaces: the label is the last field)."""
    path = root / list_file
    if not path.is_file():
        raise DataError(f"image list {path} not found")
    files, labels = [], []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        *name, label = line.split()
        if not name or not label.lstrip("-").isdigit() or not 0 <= int(label) < num_classes:
            raise DataError(f"{path}:{n}: expected '<relative path> <label in 0..{num_classes - 1}>', got '{line}'")
        files.append(str(root / " ".join(name)))
        labels.append(int(label))
    if not files:
        raise DataError(f"image list {path} is empty")
    return files, np.asarray(labels, dtype=np.int64)

