"""The built-in datasets' facts, written once: names, shapes, classes, mean and std, help, aliases.

Pure data (no torch, no Django), so that every layer can read it: the engine's readers
(sandbox/engine/datasets.py) add where each dataset comes from, the designs catalog (designs/catalog.py)
serves it to the editor and validates specs against it, and the diagnosis (feedback) reads it through the
catalog. docs/contracts.md section 4 is the table these entries must match (a test checks both).

buildx_runtime.py keeps its own list of CIFAR-10's class names: it ships alone in the download bundle and
reads the CIFAR batches without BuildX around it. A test pins that list to the one here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetFacts:
    name: str  # canonical, as specs and cache files name it
    title: str  # short, for pages and the command line
    input_shape: tuple[int, int, int]  # (C, H, W) of the stored images
    class_names: tuple[str, ...]
    mean: tuple[float, ...]  # per channel, of the [0, 1] training images: Normalize's default
    std: tuple[float, ...]
    help_en: str
    help_ko: str
    aliases: tuple[str, ...] = ()  # other names a spec may use (case, "-", "_" and spaces never matter)
    # A mirror image is still an image of the same class (a mirrored shirt is a shirt; a mirrored 2 is no 2):
    # flipping is a fair augmentation only then.
    mirror_keeps_class: bool = True

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def as_json(self) -> dict:
        """What GET /api/v1/catalog/ lists for the dataset (docs/contracts.md section 5)."""
        return {
            "name": self.name,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "class_names": list(self.class_names),
            "mean": list(self.mean),
            "std": list(self.std),
            "help": {"en": self.help_en, "ko": self.help_ko},
        }


DIGIT_CLASSES = tuple(str(i) for i in range(10))

DIGITS = DatasetFacts(
    "digits",
    "Digits (8×8, scikit-learn)",
    (1, 8, 8),
    DIGIT_CLASSES,
    (0.5,),
    (0.5,),
    "Handwritten digits, 8×8 grey (1,797 images, ships with scikit-learn): trains in seconds.",
    "손글씨 숫자, 8×8 흑백(1,797장, scikit-learn에 포함): 몇 초 만에 학습됩니다.",
    mirror_keeps_class=False,
)
SHAPES = DatasetFacts(
    "shapes",
    "Shapes (generated)",
    (3, 32, 32),
    ("circle", "square", "triangle", "cross"),
    (0.5, 0.5, 0.5),
    (0.5, 0.5, 0.5),
    "Generated coloured shapes, 32×32: circle, square, triangle, cross.",
    "생성된 컬러 도형, 32×32: 원, 사각형, 삼각형, 십자.",
)
MNIST = DatasetFacts(
    "MNIST",
    "MNIST handwritten digits",
    (1, 28, 28),
    DIGIT_CLASSES,
    (0.1307,),
    (0.3081,),
    "Handwritten digits, 28×28 grey (60,000 training images).",
    "손글씨 숫자, 28×28 흑백(학습 이미지 60,000장).",
    mirror_keeps_class=False,
)
FASHION_MNIST = DatasetFacts(
    "FashionMNIST",
    "Fashion-MNIST clothing",
    (1, 28, 28),
    (
        "T-shirt/top",
        "Trouser",
        "Pullover",
        "Dress",
        "Coat",
        "Sandal",
        "Shirt",
        "Sneaker",
        "Bag",
        "Ankle boot",
    ),
    (0.2860,),
    (0.3530,),
    "Clothing, 28×28 grey, 10 kinds (60,000 training images).",
    "의류 이미지, 28×28 흑백, 10종류(학습 이미지 60,000장).",
    aliases=("fashion",),
)
CIFAR10 = DatasetFacts(
    "CIFAR10",
    "CIFAR-10 small photos",
    (3, 32, 32),
    ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"),
    (0.4914, 0.4822, 0.4465),
    (0.2470, 0.2435, 0.2616),
    "Small colour photos, 32×32, 10 classes (50,000 training images).",
    "작은 컬러 사진, 32×32, 10개 클래스(학습 이미지 50,000장).",
)

# CIFAR-100's fine labels, in the order of the archive's meta file (fine_label_names): label k is name k.
CIFAR100_CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
    "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
    "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur",
    "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard",
    "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain",
    "mouse", "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket",
    "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider",
    "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone", "television", "tiger", "tractor",
    "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
)  # fmt: skip

# The mean and std of these three are the figures widely used with them (as CIFAR-10's are), not computed
# here: no machine that built this had the files. `fetch_dataset` computes them from the cache it builds,
# prints them, and warns when one differs by more than 0.01. EMNIST letters' in use vary in the third
# decimal (mean 0.1722 to 0.1736, std 0.3256 to 0.3317); any of them normalises well enough.
CIFAR100 = DatasetFacts(
    "CIFAR100",
    "CIFAR-100 small photos",
    (3, 32, 32),
    CIFAR100_CLASSES,
    (0.5071, 0.4865, 0.4409),
    (0.2673, 0.2564, 0.2762),
    "Small colour photos, 32×32, 100 classes (50,000 training images, 500 a class).",
    "작은 컬러 사진, 32×32, 100개 클래스(학습 이미지 50,000장, 클래스마다 500장).",
)
SVHN = DatasetFacts(
    "SVHN",
    "SVHN house-number digits",
    (3, 32, 32),
    DIGIT_CLASSES,
    (0.4377, 0.4438, 0.4728),
    (0.1980, 0.2010, 0.1970),
    "House-number digits from street photos, 32×32 colour (73,257 training images).",
    "거리 사진 속 집 번호 숫자, 32×32 컬러(학습 이미지 73,257장).",
    mirror_keeps_class=False,
)
EMNIST_LETTERS = DatasetFacts(
    "EMNISTLetters",
    "EMNIST handwritten letters",
    (1, 28, 28),
    tuple("abcdefghijklmnopqrstuvwxyz"),
    (0.1722,),
    (0.3309,),
    "Handwritten letters a–z (upper and lower case together), 28×28 grey (124,800 training images).",
    "손글씨 알파벳 a–z(대문자와 소문자를 함께), 28×28 흑백(학습 이미지 124,800장).",
    aliases=("emnist", "letters"),
    mirror_keeps_class=False,
)

# In the order pages and the catalog list them.
DATASETS: dict[str, DatasetFacts] = {
    facts.name: facts
    for facts in (DIGITS, SHAPES, MNIST, FASHION_MNIST, CIFAR10, CIFAR100, SVHN, EMNIST_LETTERS)
}


def _key(name: str) -> str:
    return re.sub(r"[\s_\-]", "", name).lower()


_BY_KEY = {_key(n): facts for facts in DATASETS.values() for n in (facts.name, *facts.aliases)}


def lookup(name: object) -> DatasetFacts | None:
    """The built-in dataset a spec means ("CIFAR10", "cifar-10", "Fashion_MNIST", "fashion"), or None."""
    if not isinstance(name, str) or len(name) > 64:
        return None
    return _BY_KEY.get(_key(name))
