"""The one catalog of everything a design can name: layers, preprocessing transforms, datasets, hyperparameters.

Validation (designs/validation.py), the compiler (designs/compiler.py), `GET /api/v1/catalog/` and the
editor's forms all read these entries; adding a layer is one entry here (plus, where its shape rule is
not PyTorch's to tell, a line in validation). No torch import: the catalog is plain data, cheap to serve.

Parameter names are PyTorch's own. Help text is kept in English and Korean side by side, here, so that
the catalog stays one self-contained document (the editor shows the one for the page's language).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from library import services as library_services
from library import text_datasets
from sandbox.engine import corpus_facts, dataset_facts
from sandbox.engine.corpus_facts import TASK_IMAGE, TASK_LM, TASKS, CorpusFacts
from sandbox.engine.dataset_facts import DatasetFacts

# A parameter without a default must be given by the user.
REQUIRED = object()
# PyTorch has no default for the argument: the compiler always writes it.
NO_TORCH_DEFAULT = object()

# Editor palette groups, in palette order.
GROUPS: tuple[tuple[str, str, str], ...] = (
    ("blocks", "Blocks and wiring", "블록과 연결"),
    ("convolution", "Convolution", "합성곱"),
    ("pooling", "Pooling and resizing", "풀링과 크기 조절"),
    ("normalisation", "Normalisation", "정규화"),
    ("activation", "Activation", "활성화 함수"),
    ("regularisation", "Regularisation", "규제"),
    ("dense", "Dense (fully connected)", "완전 연결"),
    ("sequence", "Sequence (language models)", "시퀀스(언어 모델)"),
)


@dataclass(frozen=True)
class Param:
    """One parameter of a layer, transform or the hyperparameters.

    kind: int | float | bool | choice | int_pair (an int or [h, w]) | padding (int_pair or "same"/"valid")
          | float_list (one value per channel) | shape ([C, H, W]) | size (int or [h, w]) | layers (nested)
    """

    name: str
    kind: str
    default: Any = REQUIRED
    min: float | None = None
    max: float | None = None
    choices: tuple = ()
    nullable: bool = False  # None is a legal value (its meaning is in the help text)
    inferred: bool = False  # may be left out: computed from the shape flowing in
    positional: bool = False  # written positionally by the compiler, in declaration order
    torch_default: Any = NO_TORCH_DEFAULT  # values equal to it are left out of the compiled call
    help_en: str = ""
    help_ko: str = ""
    constructor: bool = True  # an argument of the layer's class (tie_weights is wiring instead)
    tasks: tuple[str, ...] = ()  # the tasks whose specs have this setting; () = every task

    @property
    def required(self) -> bool:
        return self.default is REQUIRED and not self.inferred

    def as_json(self) -> dict:
        out: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "required": self.required,
            "inferred": self.inferred,
            "nullable": self.nullable,
            "help": {"en": self.help_en, "ko": self.help_ko},
        }
        if self.default is not REQUIRED:
            out["default"] = list(self.default) if isinstance(self.default, tuple) else self.default
        if self.min is not None:
            out["min"] = self.min
        if self.max is not None:
            out["max"] = self.max
        if self.choices:
            out["choices"] = list(self.choices)
        if self.tasks:
            out["tasks"] = list(self.tasks)
        return out

    def for_task(self, task: str) -> bool:
        return not self.tasks or task in self.tasks


@dataclass(frozen=True)
class LayerType:
    type: str
    group: str
    prefix: str  # automatic names: conv1, conv2, ...
    help_en: str
    help_ko: str
    params: tuple[Param, ...] = ()
    torch: str | None = None  # nn.<torch>; None for Input/Add/Concat/Residual (written by hand)
    inputs: str = "one"  # "one" or "many" (Add, Concat)
    rank: tuple[int, ...] = ()  # accepted per-sample input ranks: 3 = (C, H, W), 1 = (features,); () = any
    # Output shape = input shape whatever the input size (elementwise or per-channel): validation may probe
    # it with a C×1×1 tensor instead of the full image (see validation.py, "probe").
    keeps_shape: bool = False
    tasks: tuple[str, ...] = (TASK_IMAGE,)  # the tasks whose designs may use the layer

    def param(self, name: str) -> Param | None:
        for p in self.params:
            if p.name == name:
                return p
        return None

    def as_json(self) -> dict:
        return {
            "type": self.type,
            "group": self.group,
            "prefix": self.prefix,
            "help": {"en": self.help_en, "ko": self.help_ko},
            "inputs": self.inputs,
            "input_rank": list(self.rank),
            "tasks": list(self.tasks),
            "params": [p.as_json() for p in self.params],
            "inferred": [p.name for p in self.params if p.inferred],
        }


@dataclass(frozen=True)
class TransformType:
    type: str
    help_en: str
    help_ko: str
    params: tuple[Param, ...] = ()
    random: bool = False  # left out of EVAL_TRANSFORM
    runtime: str | None = None  # rt.<runtime>; None: accepted and ignored (ToTensor)

    def param(self, name: str) -> Param | None:
        for p in self.params:
            if p.name == name:
                return p
        return None

    def as_json(self) -> dict:
        return {
            "type": self.type,
            "help": {"en": self.help_en, "ko": self.help_ko},
            "random": self.random,
            "params": [p.as_json() for p in self.params],
        }


# --- Shared parameters -----------------------------------------------------------------------------

MAX_CHANNELS = 4096
MAX_FEATURES = 65536
MAX_KERNEL = 31


def _p(name: str, kind: str, en: str, ko: str, **kw: Any) -> Param:
    return Param(name=name, kind=kind, help_en=en, help_ko=ko, **kw)


IN_CHANNELS = _p(
    "in_channels",
    "int",
    "Channels coming in. Leave it out: BuildX reads it from the layer before.",
    "들어오는 채널 수. 비워 두면 앞 레이어에서 자동으로 계산합니다.",
    min=1,
    max=MAX_CHANNELS,
    inferred=True,
    positional=True,
)
OUT_CHANNELS = _p(
    "out_channels",
    "int",
    "Number of filters, i.e. channels going out.",
    "필터 개수, 즉 나가는 채널 수.",
    min=1,
    max=MAX_CHANNELS,
    positional=True,
)
BIAS = _p(
    "bias",
    "bool",
    "Learn an additive bias.",
    "더하는 편향(bias)을 학습합니다.",
    default=True,
    torch_default=True,
)
NUM_FEATURES = _p(
    "num_features",
    "int",
    "Channels (or features) to normalise. Leave it out: BuildX reads it from the layer before.",
    "정규화할 채널(또는 특성) 수. 비워 두면 앞 레이어에서 자동으로 계산합니다.",
    min=1,
    max=MAX_FEATURES,
    inferred=True,
    positional=True,
)
EPS = _p(
    "eps",
    "float",
    "Added to the variance to avoid dividing by zero.",
    "0으로 나누지 않도록 분산에 더하는 값.",
    default=1e-5,
    min=1e-12,
    max=1.0,
    torch_default=1e-5,
)
BN_MOMENTUM = _p(
    "momentum",
    "float",
    "How fast the running mean and variance follow new batches.",
    "이동 평균과 분산이 새 배치를 따라가는 속도.",
    default=0.1,
    min=0.0,
    max=1.0,
    torch_default=0.1,
)
AFFINE = _p(
    "affine",
    "bool",
    "Learn a scale and a shift per channel.",
    "채널마다 배율과 이동을 학습합니다.",
    default=True,
    torch_default=True,
)


def _kernel(default: Any, *, torch_default: Any = NO_TORCH_DEFAULT) -> Param:
    return _p(
        "kernel_size",
        "int_pair",
        "Window size: an integer or [height, width].",
        "창(커널) 크기: 정수 하나 또는 [높이, 너비].",
        default=default,
        min=1,
        max=MAX_KERNEL,
        torch_default=torch_default,
    )


def _stride(default: Any = 1, *, nullable: bool = False, torch_default: Any = 1) -> Param:
    en = "Step between windows: an integer or [height, width]."
    ko = "창을 옮기는 간격: 정수 하나 또는 [높이, 너비]."
    if nullable:
        en += " Empty means the same as kernel_size."
        ko += " 비워 두면 kernel_size와 같습니다."
    return _p(
        "stride",
        "int_pair",
        en,
        ko,
        default=default,
        min=1,
        max=16,
        nullable=nullable,
        torch_default=torch_default,
    )


def _padding(*, allow_same: bool) -> Param:
    en = "Zeros added around the input on each side: an integer or [height, width]."
    ko = "입력 둘레에 덧붙이는 0의 폭: 정수 하나 또는 [높이, 너비]."
    if allow_same:
        en += ' "same" keeps the size (stride 1 only).'
        ko += ' "same"은 크기를 유지합니다(stride 1일 때만).'
    return _p(
        "padding",
        "padding" if allow_same else "int_pair",
        en,
        ko,
        default=0,
        min=0,
        max=MAX_KERNEL,
        choices=("same", "valid") if allow_same else (),
        torch_default=0,
    )


DILATION = _p(
    "dilation",
    "int_pair",
    "Spacing between kernel elements.",
    "커널 원소 사이의 간격.",
    default=1,
    min=1,
    max=8,
    torch_default=1,
)
GROUPS_P = _p(
    "groups",
    "int",
    "Split channels into this many independent groups (1 = a normal convolution).",
    "채널을 독립된 그룹으로 나눕니다(1이면 일반 합성곱).",
    default=1,
    min=1,
    max=MAX_CHANNELS,
    torch_default=1,
)
CEIL_MODE = _p(
    "ceil_mode",
    "bool",
    "Round the output size up instead of down.",
    "출력 크기를 내림 대신 올림합니다.",
    default=False,
    torch_default=False,
)
OUTPUT_SIZE = _p(
    "output_size",
    "int_pair",
    "Output height and width, whatever the input size.",
    "입력 크기와 상관없이 정해지는 출력 높이와 너비.",
    default=1,
    min=1,
    max=512,
    torch_default=NO_TORCH_DEFAULT,
)
DROP_P = _p(
    "p",
    "float",
    "Share of values set to zero during training.",
    "학습 중 0으로 만드는 값의 비율.",
    default=0.5,
    min=0.0,
    max=0.95,
    torch_default=0.5,
)


# --- Layers ----------------------------------------------------------------------------------------

LAYERS: dict[str, LayerType] = {}


def _layer(layer: LayerType) -> None:
    LAYERS[layer.type] = layer


_layer(
    LayerType(
        "Input",
        "blocks",
        "input",
        'The model\'s input: images of the dataset after preprocessing. Optional; other layers can name it as "x".',
        '모델의 입력: 전처리를 거친 데이터셋 이미지. 생략할 수 있으며, 다른 레이어는 "x"로 가리킬 수 있습니다.',
        params=(
            _p(
                "shape",
                "shape",
                "[channels, height, width]. Leave it out: BuildX reads it from the dataset.",
                "[채널, 높이, 너비]. 비워 두면 데이터셋에서 자동으로 정합니다.",
                inferred=True,
            ),
        ),
    )
)
_layer(
    LayerType(
        "Conv2d",
        "convolution",
        "conv",
        "Slides learned filters over the image; each filter makes one output channel.",
        "학습되는 필터를 이미지 위로 밀며 적용합니다. 필터 하나가 출력 채널 하나를 만듭니다.",
        params=(
            IN_CHANNELS,
            OUT_CHANNELS,
            _kernel(3),
            _stride(),
            _padding(allow_same=True),
            DILATION,
            GROUPS_P,
            BIAS,
        ),
        torch="Conv2d",
        rank=(3,),
    )
)
_layer(
    LayerType(
        "ConvTranspose2d",
        "convolution",
        "deconv",
        "A learned upsampling: the reverse of a strided convolution (kernel 2, stride 2 doubles the size).",
        "학습되는 업샘플링: stride가 있는 합성곱의 반대입니다(kernel 2, stride 2면 크기가 두 배).",
        params=(
            IN_CHANNELS,
            OUT_CHANNELS,
            _kernel(2),
            _stride(2),
            _padding(allow_same=False),
            _p(
                "output_padding",
                "int_pair",
                "Extra rows/columns added on one side of the output.",
                "출력 한쪽에 더하는 행/열 수.",
                default=0,
                min=0,
                max=15,
                torch_default=0,
            ),
            GROUPS_P,
            BIAS,
            DILATION,
        ),
        torch="ConvTranspose2d",
        rank=(3,),
    )
)
_layer(
    LayerType(
        "BatchNorm2d",
        "normalisation",
        "bn",
        "Normalises each channel over the batch; lets deeper networks train faster and more stably.",
        "배치 전체에서 채널마다 정규화합니다. 깊은 신경망을 더 빠르고 안정적으로 학습시킵니다.",
        params=(NUM_FEATURES, EPS, BN_MOMENTUM, AFFINE),
        torch="BatchNorm2d",
        keeps_shape=True,
        rank=(3,),
    )
)
_layer(
    LayerType(
        "BatchNorm1d",
        "normalisation",
        "bn",
        "Batch normalisation for flat feature vectors (after Flatten or Linear).",
        "평탄화된 특성 벡터를 위한 배치 정규화(Flatten이나 Linear 뒤).",
        params=(NUM_FEATURES, EPS, BN_MOMENTUM, AFFINE),
        torch="BatchNorm1d",
        keeps_shape=True,
        rank=(1, 2),
    )
)
for _name, _en, _ko, _params in (
    (
        "ReLU",
        "Keeps positive values, sets negative ones to zero. The usual first choice.",
        "양수는 그대로, 음수는 0으로 바꿉니다. 가장 흔히 쓰는 활성화 함수입니다.",
        (),
    ),
    (
        "LeakyReLU",
        "Like ReLU, but lets a small slope through for negative values.",
        "ReLU와 비슷하지만 음수 쪽에 작은 기울기를 남깁니다.",
        (
            _p(
                "negative_slope",
                "float",
                "Slope for negative values.",
                "음수 구간의 기울기.",
                default=0.01,
                min=0.0,
                max=1.0,
                torch_default=0.01,
            ),
        ),
    ),
    (
        "GELU",
        "A smooth ReLU, used in transformers.",
        "부드러운 ReLU로, 트랜스포머에서 많이 씁니다.",
        (
            _p(
                "approximate",
                "choice",
                '"tanh" uses a faster approximation.',
                '"tanh"는 더 빠른 근사를 씁니다.',
                default="none",
                choices=("none", "tanh"),
                torch_default="none",
            ),
        ),
    ),
    (
        "SiLU",
        "x times sigmoid(x) (also called Swish): smooth and often a little better than ReLU.",
        "x × sigmoid(x)(Swish라고도 함): 부드럽고 ReLU보다 조금 나을 때가 많습니다.",
        (),
    ),
    (
        "ELU",
        "Like ReLU, but negative values curve smoothly towards -alpha.",
        "ReLU와 비슷하지만 음수 값은 -alpha 쪽으로 부드럽게 휘어집니다.",
        (
            _p(
                "alpha",
                "float",
                "The value negative inputs approach.",
                "음수 입력이 다가가는 값.",
                default=1.0,
                min=0.0,
                max=10.0,
                torch_default=1.0,
            ),
        ),
    ),
    (
        "Sigmoid",
        "Squashes values into (0, 1). Deep stacks of it train slowly.",
        "값을 (0, 1) 사이로 누릅니다. 여러 층 쌓으면 학습이 느려집니다.",
        (),
    ),
    (
        "Tanh",
        "Squashes values into (-1, 1); the classic LeNet activation.",
        "값을 (-1, 1) 사이로 누릅니다. 고전 LeNet의 활성화 함수입니다.",
        (),
    ),
    (
        "Softmax",
        "Turns scores into probabilities. Not needed at the end: the loss already applies it.",
        "점수를 확률로 바꿉니다. 손실 함수가 이미 적용하므로 마지막에는 필요 없습니다.",
        (
            _p(
                "dim",
                "int",
                "The dimension that sums to 1 (1 = across classes or channels).",
                "합이 1이 되는 차원(1 = 클래스 또는 채널 방향).",
                default=1,
                min=-4,
                max=3,
            ),
        ),
    ),
):
    _layer(
        LayerType(
            _name,
            "activation",
            _name.lower(),
            _en,
            _ko,
            params=_params,
            torch=_name,
            keeps_shape=True,
            tasks=TASKS if _name in ("ReLU", "GELU", "SiLU", "Tanh", "Sigmoid") else (TASK_IMAGE,),
        )
    )

_layer(
    LayerType(
        "MaxPool2d",
        "pooling",
        "pool",
        "Keeps the largest value in each window: halves height and width with kernel_size 2.",
        "창마다 가장 큰 값만 남깁니다. kernel_size 2면 높이와 너비가 절반이 됩니다.",
        params=(
            _kernel(2),
            _stride(None, nullable=True, torch_default=None),
            _padding(allow_same=False),
            DILATION,
            CEIL_MODE,
        ),
        torch="MaxPool2d",
        rank=(3,),
    )
)
_layer(
    LayerType(
        "AvgPool2d",
        "pooling",
        "pool",
        "Averages each window: halves height and width with kernel_size 2.",
        "창마다 평균을 냅니다. kernel_size 2면 높이와 너비가 절반이 됩니다.",
        params=(
            _kernel(2),
            _stride(None, nullable=True, torch_default=None),
            _padding(allow_same=False),
            CEIL_MODE,
            _p(
                "count_include_pad",
                "bool",
                "Count padded zeros in the average.",
                "덧붙인 0도 평균에 포함합니다.",
                default=True,
                torch_default=True,
            ),
        ),
        torch="AvgPool2d",
        rank=(3,),
    )
)
_layer(
    LayerType(
        "AdaptiveAvgPool2d",
        "pooling",
        "gap",
        "Averages down to a fixed size (1 = global average pooling, before Flatten and the classifier).",
        "정해진 크기로 평균을 냅니다(1 = 전역 평균 풀링, Flatten과 분류기 앞에 둡니다).",
        params=(OUTPUT_SIZE,),
        torch="AdaptiveAvgPool2d",
        rank=(3,),
    )
)
_layer(
    LayerType(
        "AdaptiveMaxPool2d",
        "pooling",
        "gmp",
        "Takes the maximum down to a fixed size (1 = global max pooling).",
        "정해진 크기로 최댓값을 취합니다(1 = 전역 최대 풀링).",
        params=(OUTPUT_SIZE,),
        torch="AdaptiveMaxPool2d",
        rank=(3,),
    )
)
_layer(
    LayerType(
        "Upsample",
        "pooling",
        "up",
        "Enlarges the image by a factor, without learned weights.",
        "학습 가중치 없이 이미지를 배율만큼 키웁니다.",
        params=(
            _p(
                "scale_factor",
                "float",
                "How many times larger (2 = double height and width).",
                "몇 배로 키울지(2 = 높이와 너비 두 배).",
                default=2.0,
                min=1.0,
                max=8.0,
            ),
            _p(
                "mode",
                "choice",
                "How new pixels are filled in.",
                "새 픽셀을 채우는 방법.",
                default="nearest",
                choices=("nearest", "bilinear"),
                torch_default="nearest",
            ),
        ),
        torch="Upsample",
        rank=(3,),
    )
)
_layer(
    LayerType(
        "Dropout",
        "regularisation",
        "dropout",
        "Randomly zeroes values during training so the network cannot rely on any single one.",
        "학습 중 값을 무작위로 0으로 만들어 특정 값에 의존하지 않게 합니다.",
        params=(DROP_P,),
        torch="Dropout",
        keeps_shape=True,
        tasks=TASKS,
    )
)
_layer(
    LayerType(
        "Dropout2d",
        "regularisation",
        "dropout",
        "Randomly zeroes whole channels during training (for images).",
        "학습 중 채널 전체를 무작위로 0으로 만듭니다(이미지용).",
        params=(DROP_P,),
        torch="Dropout2d",
        keeps_shape=True,
        rank=(3,),
    )
)
_layer(
    LayerType(
        "Flatten",
        "dense",
        "flatten",
        "Turns a C×H×W image into one long vector, for Linear layers.",
        "C×H×W 이미지를 긴 벡터 하나로 펼쳐 Linear 레이어에 넘깁니다.",
        params=(
            _p(
                "start_dim",
                "int",
                "First dimension to flatten (1 = everything but the batch).",
                "펼치기 시작할 차원(1 = 배치를 뺀 전부).",
                default=1,
                min=1,
                max=3,
                torch_default=1,
            ),
            _p(
                "end_dim",
                "int",
                "Last dimension to flatten (-1 = the last).",
                "펼칠 마지막 차원(-1 = 마지막).",
                default=-1,
                min=-3,
                max=3,
                torch_default=-1,
            ),
        ),
        torch="Flatten",
    )
)
_layer(
    LayerType(
        "Linear",
        "dense",
        "fc",
        "Fully connected: every input feature connects to every output feature. The last one gives the class scores.",
        "완전 연결: 모든 입력 특성이 모든 출력 특성과 연결됩니다. 마지막 Linear가 클래스 점수를 냅니다.",
        params=(
            _p(
                "in_features",
                "int",
                "Features coming in. Leave it out: BuildX reads it from the layer before.",
                "들어오는 특성 수. 비워 두면 앞 레이어에서 자동으로 계산합니다.",
                min=1,
                max=2**26,
                inferred=True,
                positional=True,
            ),
            _p(
                "out_features",
                "int",
                "Features going out (the number of classes for the last layer).",
                "나가는 특성 수(마지막 레이어라면 클래스 수).",
                min=1,
                max=MAX_FEATURES,
                positional=True,
            ),
            BIAS,
            _p(
                "tie_weights",
                "bool",
                "Language models: share the weight matrix with the token embedding (GPT-2 does), which saves "
                "vocabulary × features parameters.",
                "언어 모델: 토큰 임베딩과 가중치 행렬을 함께 씁니다(GPT-2 방식). 어휘 수 × 특성 수만큼 "
                "파라미터가 줄어듭니다.",
                default=False,
                constructor=False,
                tasks=(TASK_LM,),
            ),
        ),
        torch="Linear",
        rank=(1,),
        tasks=TASKS,
    )
)
_layer(
    LayerType(
        "Identity",
        "blocks",
        "identity",
        "Passes its input through unchanged (a placeholder).",
        "입력을 그대로 내보냅니다(자리 표시용).",
        torch="Identity",
        keeps_shape=True,
        tasks=TASKS,
    )
)
_layer(
    LayerType(
        "Add",
        "blocks",
        "add",
        "Adds the outputs of two or more layers of the same shape (a skip connection). List them in input.",
        "같은 모양인 두 개 이상의 레이어 출력을 더합니다(스킵 연결). input에 나열하세요.",
        inputs="many",
        tasks=TASKS,
    )
)
_layer(
    LayerType(
        "Concat",
        "blocks",
        "concat",
        "Joins the outputs of two or more layers along a dimension (1 = channels). List them in input.",
        "두 개 이상의 레이어 출력을 한 차원(1 = 채널)을 따라 이어 붙입니다. input에 나열하세요.",
        params=(
            _p(
                "dim",
                "int",
                "The dimension to join along (1 = channels).",
                "이어 붙일 차원(1 = 채널).",
                default=1,
                min=1,
                max=3,
            ),
        ),
        inputs="many",
    )
)
_layer(
    LayerType(
        "Residual",
        "blocks",
        "res",
        "A residual block: its layers, plus a skip connection that adds the block's input to their output. "
        "When the layers change the shape, the skip gets a 1×1 convolution and batch norm automatically.",
        "잔차 블록: 안쪽 레이어들의 출력에 블록의 입력을 더하는 스킵 연결이 붙습니다. "
        "안쪽 레이어가 모양을 바꾸면 스킵에 1×1 합성곱과 배치 정규화가 자동으로 들어갑니다.",
        params=(
            _p(
                "layers",
                "layers",
                "The layers inside the block, in order.",
                "블록 안의 레이어들(순서대로).",
                default=(),
            ),
        ),
    )
)


# --- Sequence layers (language models: shapes are (T,) token ids, then (T, C) vectors per position) -------

N_EMBD = _p(
    "n_embd",
    "int",
    "Features per position. Leave it out: BuildX reads it from the layer before.",
    "위치마다의 특성 수. 비워 두면 앞 레이어에서 자동으로 계산합니다.",
    min=1,
    max=MAX_FEATURES,
    inferred=True,
    positional=True,
)
VOCAB_SIZE = _p(
    "vocab_size",
    "int",
    "How many different tokens there are. Leave it out: BuildX reads it from the dataset's tokenizer.",
    "서로 다른 토큰의 수. 비워 두면 데이터셋의 토크나이저에서 자동으로 정합니다.",
    min=1,
    max=MAX_FEATURES,
    inferred=True,
    positional=True,
)
CONTEXT_LENGTH = _p(
    "context_length",
    "int",
    "The most positions it has a vector for. Leave it out: the design's context_length.",
    "벡터를 가진 최대 위치 수. 비워 두면 설계의 context_length를 씁니다.",
    min=1,
    max=8192,
    inferred=True,
    positional=True,
)
N_HEAD = _p(
    "n_head",
    "int",
    "Attention heads: each looks at the sequence in its own way with n_embd / n_head features.",
    "어텐션 헤드 수: 헤드마다 n_embd / n_head개의 특성으로 시퀀스를 나름대로 봅니다.",
    default=4,
    min=1,
    max=64,
    positional=True,
)
SEQ_DROPOUT = _p(
    "dropout",
    "float",
    "Share of values set to zero during training (0 = none; small models rarely need it).",
    "학습 중 0으로 만드는 값의 비율(0 = 사용 안 함; 작은 모델은 거의 필요 없습니다).",
    default=0.0,
    min=0.0,
    max=0.9,
    torch_default=0.0,
)
EXPANSION = _p(
    "expansion",
    "int",
    "How many times wider the MLP's hidden layer is than n_embd (4 in GPT).",
    "MLP의 은닉층이 n_embd보다 몇 배 넓은지(GPT는 4).",
    default=4,
    min=1,
    max=8,
    torch_default=4,
)
NORMALIZED_SHAPE = _p(
    "normalized_shape",
    "int",
    "Features per position to normalise. Leave it out: BuildX reads it from the layer before.",
    "정규화할 위치별 특성 수. 비워 두면 앞 레이어에서 자동으로 계산합니다.",
    min=1,
    max=MAX_FEATURES,
    inferred=True,
    positional=True,
)
_LM = (TASK_LM,)

_layer(
    LayerType(
        "Embedding",
        "sequence",
        "emb",
        "Turns each token id into a learned vector (a lookup table with one row per token).",
        "토큰 id마다 학습되는 벡터로 바꿉니다(토큰마다 한 행인 표).",
        params=(
            _p(
                "num_embeddings",
                "int",
                "Rows of the table: the vocabulary size. Leave it out: BuildX reads it from the tokenizer.",
                "표의 행 수, 즉 어휘 크기. 비워 두면 토크나이저에서 자동으로 정합니다.",
                min=1,
                max=MAX_FEATURES,
                inferred=True,
                positional=True,
            ),
            _p(
                "embedding_dim",
                "int",
                "Length of each token's vector.",
                "토큰마다의 벡터 길이.",
                min=1,
                max=MAX_FEATURES,
                positional=True,
            ),
        ),
        torch="Embedding",
        rank=(1,),
        tasks=_LM,
    )
)
_layer(
    LayerType(
        "TokenAndPosition",
        "sequence",
        "embed",
        "Token ids to vectors: a learned vector per token plus a learned vector per position, added.",
        "토큰 id를 벡터로: 토큰마다 학습되는 벡터와 위치마다 학습되는 벡터를 더합니다.",
        params=(
            VOCAB_SIZE,
            _p(
                "n_embd",
                "int",
                "Length of each position's vector (the model's width).",
                "위치마다의 벡터 길이(모델의 폭).",
                default=64,
                min=1,
                max=MAX_FEATURES,
                positional=True,
            ),
            CONTEXT_LENGTH,
        ),
        rank=(1,),
        tasks=_LM,
    )
)
_layer(
    LayerType(
        "PositionalEmbedding",
        "sequence",
        "pos",
        "Adds a learned vector per position: attention alone does not know which token came first.",
        "위치마다 학습되는 벡터를 더합니다: 어텐션만으로는 어느 토큰이 먼저 왔는지 모릅니다.",
        params=(CONTEXT_LENGTH, N_EMBD),
        keeps_shape=True,
        tasks=_LM,
    )
)
_layer(
    LayerType(
        "LayerNorm",
        "normalisation",
        "ln",
        "Normalises each position's vector to mean 0 and variance 1, then scales and shifts it.",
        "위치마다의 벡터를 평균 0, 분산 1로 정규화한 뒤 배율과 이동을 적용합니다.",
        params=(NORMALIZED_SHAPE, EPS, BIAS),
        torch="LayerNorm",
        keeps_shape=True,
        tasks=_LM,
    )
)
_layer(
    LayerType(
        "RMSNorm",
        "normalisation",
        "rms",
        "Like LayerNorm without the mean: divides each vector by its root mean square (used in Llama).",
        "평균을 빼지 않는 LayerNorm: 벡터를 제곱평균제곱근으로 나눕니다(Llama에서 씀).",
        params=(
            NORMALIZED_SHAPE,
            _p(
                "eps",
                "float",
                "Added to avoid dividing by zero; empty: PyTorch's choice for the number type.",
                "0으로 나누지 않도록 더하는 값. 비우면 PyTorch가 자료형에 맞게 정합니다.",
                default=None,
                nullable=True,
                min=1e-12,
                max=1.0,
                torch_default=None,
            ),
        ),
        torch="RMSNorm",
        keeps_shape=True,
        tasks=_LM,
    )
)
_layer(
    LayerType(
        "CausalSelfAttention",
        "sequence",
        "attn",
        "Multi-head self-attention: each position gathers information from itself and the positions "
        "before it (never after: the model must not see the token it predicts).",
        "멀티헤드 셀프 어텐션: 각 위치가 자신과 앞 위치들에서 정보를 모읍니다(뒤는 보지 않습니다: "
        "예측할 토큰을 보면 안 되니까요).",
        params=(N_EMBD, N_HEAD, SEQ_DROPOUT, BIAS),
        keeps_shape=True,
        tasks=_LM,
    )
)
_layer(
    LayerType(
        "MLP",
        "sequence",
        "mlp",
        "Feed-forward: widens each position's vector, applies GELU, narrows it back (positions do not mix).",
        "피드포워드: 위치마다의 벡터를 넓히고 GELU를 적용한 뒤 다시 좁힙니다(위치끼리 섞이지 않음).",
        params=(N_EMBD, EXPANSION, SEQ_DROPOUT, BIAS),
        keeps_shape=True,
        tasks=_LM,
    )
)
_layer(
    LayerType(
        "TransformerBlock",
        "sequence",
        "block",
        "One GPT block: LayerNorm → CausalSelfAttention added back to its input, then LayerNorm → MLP added "
        "back. Open it to see the parts.",
        "GPT 블록 하나: LayerNorm → CausalSelfAttention을 입력에 더하고, LayerNorm → MLP를 다시 더합니다. "
        "열어서 안의 부분을 볼 수 있습니다.",
        params=(N_EMBD, N_HEAD, EXPANSION, SEQ_DROPOUT, BIAS),
        keeps_shape=True,
        tasks=_LM,
    )
)
_layer(
    LayerType(
        "Conv1d",
        "sequence",
        "conv",
        "A causal convolution along the sequence: each position sees the kernel_size positions up to itself "
        "(an MLP over a window of the last tokens).",
        "시퀀스를 따라가는 인과 합성곱: 각 위치가 자신까지의 kernel_size개 위치를 봅니다"
        "(최근 토큰 창 위의 MLP).",
        params=(
            IN_CHANNELS,
            OUT_CHANNELS,
            _p(
                "kernel_size",
                "int",
                "How many positions each output looks at (itself and the ones before).",
                "출력 하나가 보는 위치 수(자신과 그 앞).",
                default=3,
                min=1,
                max=64,
            ),
            _p(
                "dilation",
                "int",
                "Spacing between the positions it looks at.",
                "보는 위치 사이의 간격.",
                default=1,
                min=1,
                max=64,
                torch_default=1,
            ),
            BIAS,
        ),
        tasks=_LM,
    )
)
for _name, _en, _ko, _gates in (
    (
        "LSTM",
        "A recurrent layer that reads the sequence in order and keeps a memory with gates (long short-term memory).",
        "시퀀스를 순서대로 읽으며 게이트로 기억을 유지하는 순환 레이어(LSTM).",
        4,
    ),
    (
        "GRU",
        "A recurrent layer like LSTM with fewer gates: lighter, often as good.",
        "LSTM과 비슷하지만 게이트가 더 적은 순환 레이어: 더 가볍고 성능은 비슷할 때가 많습니다.",
        3,
    ),
):
    _layer(
        LayerType(
            _name,
            "sequence",
            _name.lower(),
            _en,
            _ko,
            params=(
                _p(
                    "input_size",
                    "int",
                    "Features coming in. Leave it out: BuildX reads it from the layer before.",
                    "들어오는 특성 수. 비워 두면 앞 레이어에서 자동으로 계산합니다.",
                    min=1,
                    max=MAX_FEATURES,
                    inferred=True,
                    positional=True,
                ),
                _p(
                    "hidden_size",
                    "int",
                    "Size of the memory and of each position's output.",
                    "기억의 크기이자 위치마다의 출력 크기.",
                    min=1,
                    max=4096,
                    positional=True,
                ),
                _p(
                    "num_layers",
                    "int",
                    "Recurrent layers stacked inside.",
                    "안에 쌓는 순환 레이어 수.",
                    default=1,
                    min=1,
                    max=4,
                    torch_default=1,
                ),
                _p(
                    "dropout",
                    "float",
                    "Dropout between the stacked layers (needs num_layers of 2 or more).",
                    "쌓은 레이어 사이의 드롭아웃(num_layers가 2 이상일 때).",
                    default=0.0,
                    min=0.0,
                    max=0.9,
                    torch_default=0.0,
                ),
            ),
            torch=_name,
            tasks=_LM,
        )
    )


# --- Preprocessing ---------------------------------------------------------------------------------


def _size(en: str, ko: str, **kw: Any) -> Param:
    return _p("size", "size", en, ko, min=1, max=1024, positional=True, **kw)


TRANSFORMS: dict[str, TransformType] = {
    t.type: t
    for t in (
        TransformType(
            "Resize",
            "Resizes every image to this size: an integer (square) or [height, width].",
            "모든 이미지를 이 크기로 바꿉니다: 정수(정사각형) 또는 [높이, 너비].",
            params=(_size("Target size.", "목표 크기."),),
            runtime="Resize",
        ),
        TransformType(
            "CenterCrop",
            "Cuts the central part of this size out of every image.",
            "모든 이미지의 가운데를 이 크기로 잘라냅니다.",
            params=(_size("Crop size.", "자를 크기."),),
            runtime="CenterCrop",
        ),
        TransformType(
            "RandomCrop",
            "Training only: pads the image, then cuts a random part of this size (classic augmentation).",
            "학습 때만: 이미지를 덧대고 이 크기의 무작위 부분을 잘라냅니다(대표적인 데이터 증강).",
            params=(
                _size("Crop size.", "자를 크기."),
                _p(
                    "padding",
                    "int",
                    "Zeros added on each side before cropping.",
                    "자르기 전에 각 변에 덧붙이는 0의 폭.",
                    default=0,
                    min=0,
                    max=64,
                    torch_default=0,
                ),
            ),
            random=True,
            runtime="RandomCrop",
        ),
        TransformType(
            "RandomHorizontalFlip",
            "Training only: mirrors images left-right with probability p.",
            "학습 때만: 확률 p로 이미지를 좌우로 뒤집습니다.",
            params=(
                _p(
                    "p",
                    "float",
                    "Probability of flipping.",
                    "뒤집을 확률.",
                    default=0.5,
                    min=0.0,
                    max=1.0,
                    torch_default=0.5,
                ),
            ),
            random=True,
            runtime="RandomHorizontalFlip",
        ),
        TransformType(
            "RandomVerticalFlip",
            "Training only: flips images upside down with probability p.",
            "학습 때만: 확률 p로 이미지를 위아래로 뒤집습니다.",
            params=(
                _p(
                    "p",
                    "float",
                    "Probability of flipping.",
                    "뒤집을 확률.",
                    default=0.5,
                    min=0.0,
                    max=1.0,
                    torch_default=0.5,
                ),
            ),
            random=True,
            runtime="RandomVerticalFlip",
        ),
        TransformType(
            "RandomRotation",
            "Training only: rotates images by a random angle in [-degrees, degrees].",
            "학습 때만: [-degrees, degrees] 범위의 무작위 각도로 이미지를 회전합니다.",
            params=(
                _p(
                    "degrees",
                    "float",
                    "Largest rotation, in degrees.",
                    "최대 회전 각도(도).",
                    default=10.0,
                    min=0.0,
                    max=180.0,
                    positional=True,
                ),
            ),
            random=True,
            runtime="RandomRotation",
        ),
        TransformType(
            "ColorJitter",
            "Training only: randomly changes brightness, contrast, saturation and hue.",
            "학습 때만: 밝기, 대비, 채도, 색조를 무작위로 바꿉니다.",
            params=(
                _p(
                    "brightness",
                    "float",
                    "How much brightness may change (0 = not at all).",
                    "밝기 변화 폭(0 = 변화 없음).",
                    default=0.0,
                    min=0.0,
                    max=2.0,
                    torch_default=0.0,
                ),
                _p(
                    "contrast",
                    "float",
                    "How much contrast may change.",
                    "대비 변화 폭.",
                    default=0.0,
                    min=0.0,
                    max=2.0,
                    torch_default=0.0,
                ),
                _p(
                    "saturation",
                    "float",
                    "How much saturation may change (colour images).",
                    "채도 변화 폭(컬러 이미지).",
                    default=0.0,
                    min=0.0,
                    max=2.0,
                    torch_default=0.0,
                ),
                _p(
                    "hue",
                    "float",
                    "How much hue may change (at most 0.5).",
                    "색조 변화 폭(최대 0.5).",
                    default=0.0,
                    min=0.0,
                    max=0.5,
                    torch_default=0.0,
                ),
            ),
            random=True,
            runtime="ColorJitter",
        ),
        TransformType(
            "Grayscale",
            "Turns colour images grey (1 channel, or 3 identical channels).",
            "컬러 이미지를 흑백으로 바꿉니다(채널 1개, 또는 똑같은 채널 3개).",
            params=(
                _p(
                    "num_output_channels",
                    "choice",
                    "Channels after the conversion.",
                    "변환 후 채널 수.",
                    default=1,
                    choices=(1, 3),
                    torch_default=1,
                ),
            ),
            runtime="Grayscale",
        ),
        TransformType(
            "Normalize",
            "Subtracts a mean and divides by a standard deviation per channel. "
            "Leave mean and std out to use the dataset's own.",
            "채널마다 평균을 빼고 표준편차로 나눕니다. mean과 std를 비워 두면 데이터셋의 값을 씁니다.",
            params=(
                _p(
                    "mean",
                    "float_list",
                    "One value per channel; empty: the dataset's.",
                    "채널마다 하나; 비우면 데이터셋 값.",
                    default=None,
                    nullable=True,
                    min=-10.0,
                    max=10.0,
                    positional=True,
                ),
                _p(
                    "std",
                    "float_list",
                    "One value per channel; empty: the dataset's.",
                    "채널마다 하나; 비우면 데이터셋 값.",
                    default=None,
                    nullable=True,
                    min=1e-6,
                    max=100.0,
                    positional=True,
                ),
            ),
            runtime="Normalize",
        ),
        TransformType(
            "ToTensor",
            "Accepted for compatibility and ignored: images are always tensors scaled to [0, 1].",
            "호환성을 위해 받아들이지만 아무 일도 하지 않습니다: 이미지는 항상 [0, 1] 범위의 텐서입니다.",
        ),
    )
}


# --- Facts other modules ask about, derived from the entries above (never listed again elsewhere) ------

# Layers whose output has their input's shape: inserting or removing one changes no size downstream.
SHAPE_KEEPING_LAYERS: frozenset[str] = frozenset(t for t, layer in LAYERS.items() if layer.keeps_shape)
# Transforms that only augment training (left out of EVAL_TRANSFORM).
RANDOM_TRANSFORMS: frozenset[str] = frozenset(t for t, transform in TRANSFORMS.items() if transform.random)
# Settings validation computes from the shape flowing in (in_channels, in_features, num_features, Input's
# shape): a spec may leave them out, and an edit that changes shapes clears them downstream.
INFERRED_PARAMS: frozenset[str] = frozenset(
    p.name for layer in LAYERS.values() for p in layer.params if p.inferred
)


# --- Datasets: their facts live with the engine's readers, in one place (sandbox/engine/dataset_facts.py) ---

DATASETS: dict[str, DatasetFacts] = dataset_facts.DATASETS
# A built-in set (case, "-", "_" and spaces do not matter: "CIFAR10", "cifar-10") or a ready uploaded one
# ("upload-17", the dataset library's facts). Who may use an uploaded one is checked at the doors
# (designs.services.spec_validate with the user, the runs API), not here.
dataset_lookup = library_services.lookup_facts

# The text corpora of language models, likewise (sandbox/engine/corpus_facts.py), or a ready uploaded text
# dataset ("upload-17", tokenised when it was checked).
CORPORA: dict[str, CorpusFacts] = corpus_facts.CORPORA
corpus_lookup = text_datasets.lookup_corpus


def lm_vocab_size(hyperparameters: dict, corpus: CorpusFacts) -> int:
    """The vocabulary a language model of this corpus and tokenizer ends with."""
    if corpus.tokenizer:  # an uploaded text: tokenised at upload, with the vocabulary it got
        return corpus.vocab_size
    if hyperparameters.get("tokenizer") == "bpe":
        return int(hyperparameters.get("vocab_size") or BPE_DEFAULT_VOCAB)
    return corpus.vocab_size


BPE_DEFAULT_VOCAB = 512


# --- Hyperparameters -------------------------------------------------------------------------------

# The most epochs a design may say at all (a design file, a script from the assistant). What this server
# trains is less: RUNS_MAX_EPOCHS, one of the training limits in designs/limits.py.
SPEC_MAX_EPOCHS = 1000

HYPERPARAMETERS: tuple[Param, ...] = (
    _p(
        "epochs",
        "int",
        "Passes over the training data.",
        "학습 데이터를 몇 번 반복할지.",
        default=10,
        min=1,
        max=SPEC_MAX_EPOCHS,
    ),
    _p(
        "batch_size",
        "int",
        "Images per training step.",
        "학습 한 단계에 쓰는 이미지 수.",
        default=64,
        min=1,
        max=4096,
    ),
    _p(
        "learning_rate",
        "float",
        "Step size of the optimiser.",
        "옵티마이저의 보폭(학습률).",
        default=0.001,
        min=1e-6,
        max=10.0,
    ),
    _p(
        "optimizer",
        "choice",
        "sgd (with momentum), adam or adamw.",
        "sgd(모멘텀 포함), adam, adamw 중 하나.",
        default="adam",
        choices=("sgd", "adam", "adamw"),
    ),
    _p(
        "momentum",
        "float",
        "SGD only: how much of the previous step carries over.",
        "SGD 전용: 이전 단계를 얼마나 이어갈지.",
        default=0.9,
        min=0.0,
        max=0.999,
    ),
    _p(
        "weight_decay",
        "float",
        "Pulls weights towards zero (L2 regularisation).",
        "가중치를 0 쪽으로 당깁니다(L2 규제).",
        default=0.0,
        min=0.0,
        max=1.0,
    ),
    _p(
        "lr_schedule",
        "choice",
        "How the learning rate changes over the epochs.",
        "에포크에 따라 학습률을 바꾸는 방식.",
        default="none",
        choices=("none", "step", "cosine"),
    ),
    _p(
        "lr_step_size",
        "int",
        "step schedule: epochs between decays; empty: a third of the epochs.",
        "step 방식: 학습률을 줄이는 에포크 간격; 비우면 에포크의 3분의 1.",
        default=None,
        nullable=True,
        min=1,
        max=SPEC_MAX_EPOCHS,
    ),
    _p(
        "lr_gamma",
        "float",
        "step schedule: factor applied at each decay.",
        "step 방식: 줄일 때마다 곱하는 값.",
        default=0.1,
        min=0.001,
        max=1.0,
    ),
    _p(
        "label_smoothing",
        "float",
        "Softens the targets a little; can help generalisation.",
        "정답 레이블을 조금 부드럽게 만들어 일반화를 돕습니다.",
        default=0.0,
        min=0.0,
        max=0.5,
    ),
    _p(
        "seed",
        "int",
        "Random seed: the same seed gives the same run.",
        "난수 시드: 같은 시드면 같은 결과가 나옵니다.",
        default=42,
        min=0,
        max=2**31 - 1,
    ),
    _p(
        "val_split",
        "float",
        "Share of the training data held out for validation.",
        "검증용으로 떼어 두는 학습 데이터 비율.",
        default=0.1,
        min=0.05,
        max=0.5,
    ),
)
HYPERPARAMETER_BY_NAME = {p.name: p for p in HYPERPARAMETERS}


def _default(name: str, default: Any, **kw: Any) -> Param:
    return replace(HYPERPARAMETER_BY_NAME[name], default=default, **kw)


# A language model trains by steps on random windows of the token stream (nanoGPT's loop): an "epoch" is
# steps_per_epoch steps, then a validation estimate, a sample and a checkpoint. The learning rate warms up
# linearly for warmup_steps and then follows a cosine down to a tenth of learning_rate.
LM_HYPERPARAMETERS: tuple[Param, ...] = (
    _default("epochs", 10),
    _p(
        "steps_per_epoch",
        "int",
        "Training steps between two validations (each step: one batch of random windows).",
        "검증과 검증 사이의 학습 단계 수(한 단계: 무작위 구간 한 배치).",
        default=100,
        min=1,
        max=100_000,
    ),
    _default(
        "batch_size",
        32,
        help_en="Windows of text per training step.",
        help_ko="학습 한 단계에 쓰는 텍스트 구간 수.",
    ),
    _p(
        "context_length",
        "int",
        "Tokens the model sees at once (the window's length, T).",
        "모델이 한 번에 보는 토큰 수(구간의 길이, T).",
        default=64,
        min=2,
        max=2048,
    ),
    _p(
        "tokenizer",
        "choice",
        "char: one token per character. bpe: byte-level BPE trained on the corpus (vocab_size tokens).",
        "char: 글자 하나가 토큰 하나. bpe: 말뭉치로 학습한 바이트 수준 BPE(vocab_size개 토큰).",
        default="char",
        choices=("char", "bpe"),
    ),
    _p(
        "vocab_size",
        "int",
        "bpe only: the vocabulary size to train the tokenizer to; empty for char.",
        "bpe 전용: 토크나이저를 학습시킬 어휘 크기. char이면 비워 둡니다.",
        default=None,
        nullable=True,
        min=257,
        max=16384,
    ),
    _default("learning_rate", 0.001),
    _default("optimizer", "adamw"),
    _default("momentum", 0.9),
    _default("weight_decay", 0.01),
    _default("lr_schedule", "cosine", choices=("none", "cosine")),
    _p(
        "warmup_steps",
        "int",
        "Steps over which the learning rate rises from almost 0 to learning_rate.",
        "학습률이 거의 0에서 learning_rate까지 올라가는 단계 수.",
        default=100,
        min=0,
        max=100_000,
    ),
    _p(
        "grad_clip",
        "float",
        "The largest gradient norm a step may use (0 = no clipping); keeps a bad batch from wrecking training.",
        "한 단계에서 쓸 수 있는 최대 기울기 노름(0 = 자르지 않음): 나쁜 배치 하나가 학습을 망치지 않게 합니다.",
        default=1.0,
        min=0.0,
        max=100.0,
    ),
    HYPERPARAMETER_BY_NAME["seed"],
)
LM_HYPERPARAMETER_BY_NAME = {p.name: p for p in LM_HYPERPARAMETERS}
TASK_HYPERPARAMETERS: dict[str, tuple[Param, ...]] = {
    TASK_IMAGE: HYPERPARAMETERS,
    TASK_LM: LM_HYPERPARAMETERS,
}
TASK_TEXT: dict[str, tuple[str, str, str, str]] = {
    TASK_IMAGE: (
        "Image classification",
        "이미지 분류",
        "Images in, one score per class out.",
        "이미지를 넣으면 클래스마다 점수 하나가 나옵니다.",
    ),
    TASK_LM: (
        "Language model",
        "언어 모델",
        "Token ids in, next-token scores at every position out; it writes text one token at a time.",
        "토큰 id를 넣으면 위치마다 다음 토큰의 점수가 나옵니다. 한 번에 토큰 하나씩 글을 씁니다.",
    ),
}

# Keys of the original BuildX's hyperparameters that a design file may still carry and that mean nothing
# here: accepted on import, dropped from the normalised spec. `use_cloud` asked for a GPU worker, but
# where a run trains is the deployment's choice (every `training` worker of the production compose file
# has a GPU; RUNS_DEVICE), not a design's: a flag that cannot change where a run goes is not offered.
IGNORED_HYPERPARAMETERS = frozenset({"use_cloud"})


# --- Limits against hostile or runaway specs -------------------------------------------------------

LIMITS = {
    "max_layers": 500,  # all layers, inner layers of Residual blocks included
    "max_depth": 4,  # Residual inside Residual inside ...
    "max_inputs": 16,  # inputs of one Add / Concat
    "max_preprocessing": 32,
    "max_name_length": 64,
    "max_model_name_length": 100,
    # Per-sample activation size and any single dimension: keeps meta shapes (and the MAC arithmetic) sane.
    "max_activation_elements": 2**26,
    "max_dimension": 65536,
}


def catalog_as_json() -> dict:
    """What `GET /api/v1/catalog/` serves: the editor builds its palette and forms from it."""
    return {
        "groups": [{"id": g, "label": {"en": en, "ko": ko}} for g, en, ko in GROUPS],
        "layers": [layer.as_json() for layer in LAYERS.values()],
        "transforms": [t.as_json() for t in TRANSFORMS.values()],
        "datasets": [d.as_json() for d in DATASETS.values()],
        "corpora": [c.as_json() for c in CORPORA.values()],
        "hyperparameters": [p.as_json() for p in HYPERPARAMETERS],
        "tasks": [
            {
                "id": task,
                "label": {"en": TASK_TEXT[task][0], "ko": TASK_TEXT[task][1]},
                "help": {"en": TASK_TEXT[task][2], "ko": TASK_TEXT[task][3]},
                "hyperparameters": [p.as_json() for p in TASK_HYPERPARAMETERS[task]],
            }
            for task in TASKS
        ],
        "limits": dict(LIMITS),
    }
