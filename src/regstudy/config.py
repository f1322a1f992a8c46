"""params.yaml, read into flat dataclasses and validated on load.

params.yaml holds the settings of one profile, the one the pipeline runs (so that `dvc params diff`,
`dvc exp run -S train.epochs=1` and `dvc exp show` see only what the pipeline uses)::

    profile: smoke            # its name: outputs go to runs/<profile>/ and results/<profile>/
    smoke: true               # tiny models: every output says SMOKE and gives no verdict
    require_gpu: false
    families: {r0: {kind, registers, size, seeds, images}, ...}   # one training stage each
    model, sizes_table, train, scene, analysis
    emergence: {registers, seeds, base, grid}   # the emergence map (regstudy.emergence)
    pretrained: {models, weights, images, image_size, only}   # public timm ViTs (regstudy.pretrained)

The profiles the study ships (`smoke`, `study`, ...) are complete copies of that layout in
`src/regstudy/profiles/<name>.yaml`; `python -m regstudy.repro --profile NAME` copies one into
params.yaml. Every block maps onto one dataclass below; an unknown or missing key, a wrong type or a
value out of range raises :class:`ConfigError` naming the key, the file and the fix.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from . import paths

MAX_REGISTERS = 16


class ConfigError(ValueError):
    """A parameter is missing, unknown, mistyped or out of range."""


# --------------------------------------------------------------------------------------------
# the blocks
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelConfig:
    """The ViT: timm's VisionTransformer with a class token, `registers` register tokens and LayerScale."""
    embed_dim: int
    depth: int
    num_heads: int
    patch_size: int
    img_size: int
    mlp_ratio: float = 4.0
    layerscale: float = 1e-4  # LayerScale init value; 0 turns LayerScale off
    registers: int = 0
    in_chans: int = 1
    num_classes: int = 10

    @property
    def grid(self) -> int:
        return self.img_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid * self.grid


@dataclass(frozen=True)
class SizeConfig:
    embed_dim: int
    depth: int
    num_heads: int


@dataclass(frozen=True)
class ModelDefaults:
    size: str             # key into the profile's size table for the main runs
    patch_size: int
    mlp_ratio: float
    layerscale: float


@dataclass(frozen=True)
class TrainConfig:
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    warmup_steps: int
    label_smoothing: float
    grad_clip: float
    train_images: int     # 0 = the whole training split
    ckpt_every: int       # epochs between checkpoints
    compile: bool         # torch.compile on CUDA
    probe_images: int     # fixed validation images whose token norms are logged every epoch
    shift: int            # random shift in pixels (pad + crop)
    flip: bool            # random horizontal flip
    eval_images: int = 0  # val/test images scored during and after training; 0 = all
    eval_batch_size: int = 1024


@dataclass(frozen=True)
class SceneConfig:
    """Fashion-MNIST items pasted at a random place and scale on a textured canvas (LOST, Table 3)."""
    canvas: int
    patch_size: int
    scale_min: int        # item side in pixels
    scale_max: int
    texture: float        # amplitude of the distractor texture, 0..1
    epochs: int
    test_scenes: int


@dataclass(frozen=True)
class AnalysisConfig:
    eval_images: int          # test images whose tokens the norm figures use
    map_images: int           # images in the map grids (Figs 1-3, 9)
    probe_train_images: int   # training images whose frozen tokens train the linear probes
    probe_test_images: int    # test images the probes are scored on
    probe_epochs: int
    probe_lr: float
    probe_seeds: int          # repeats of each probe (spread)
    lost_k: int               # LOST: number of lowest-degree patches for seed expansion
    lost_feature: str         # key | value | output
    lost_bias: float          # added to the patch-similarity matrix before degrees are taken
    voc_root: str = ""        # folder holding VOCdevkit/VOC2007 and VOC2012 ("" = not available)
    coco_root: str = ""       # folder holding annotations/instances_train2014.json and train2014/
    coco20k_list: str = ""    # file listing the 19,817 COCO20k images
    ttr_top_k: int = 10       # test-time registers: neurons kept (top-k over the model)
    ttr_max_layer: int = 0    # ... among blocks 1..ttr_max_layer (0 = every block)
    ttr_images: int = 128     # validation images the outliers and neuron scores are taken from
    real_image_size: int = 112  # longer side of VOC/COCO images fed to the scene models
    real_max_images: int = 0  # cap on VOC/COCO images (0 = all)

    def __post_init__(self):
        if self.lost_feature not in ("key", "value", "output"):
            raise ConfigError(f"analysis.lost_feature must be key, value or output, not {self.lost_feature!r}")


@dataclass(frozen=True)
class Profile:
    name: str
    smoke: bool
    require_gpu: bool
    model: ModelDefaults
    sizes_table: dict
    train: TrainConfig
    scene: SceneConfig
    analysis: AnalysisConfig

    def size(self, name: str) -> SizeConfig:
        if name not in self.sizes_table:
            raise ConfigError(f"model size {name!r} is not in sizes_table of profile {self.name!r} "
                              f"(have {sorted(self.sizes_table)}); add it to params.yaml")
        return self.sizes_table[name]

    @property
    def label(self) -> str:
        """What every figure and table of this profile says about its scale."""
        return "SMOKE RUN (tiny CPU models, not a result)" if self.smoke else f"{self.name} profile"


@dataclass(frozen=True)
class FamilyConfig:
    """One training stage: the seeds of one configuration, trained together as one batched model."""
    kind: str             # main (Fashion-MNIST), size (Fig. 4c sweep) or scene (LOST scenes)
    registers: int
    size: str             # key of sizes_table
    seeds: tuple
    images: str           # the params block that defines its images: model (28x28 items) or scene

    @property
    def run_names(self) -> list:
        return [run_name(self.kind, self.registers, s, self.size) for s in self.seeds]


@dataclass(frozen=True)
class Study:
    """The whole of params.yaml: one profile's settings and the families it trains."""
    profile: str
    families: dict        # family name (its folder under runs/<profile>/<kind>/) -> FamilyConfig
    settings: Profile
    emergence: Any = None  # the emergence grid (regstudy.emergence.EmergenceConfig)
    pretrained: Any = None  # the public timm models read out (regstudy.pretrained.PretrainedConfig)

    @property
    def active(self) -> Profile:
        return self.settings

    def select(self, profile: str) -> Profile:
        """The settings, after checking that params.yaml holds `profile` (what a notebook was asked for)."""
        if profile != self.profile:
            raise ConfigError(f"params.yaml holds profile {self.profile!r}, not {profile!r}. Switch with "
                              f"`python -m regstudy.repro --profile {profile}` (it copies "
                              f"src/regstudy/profiles/{profile}.yaml into params.yaml), or pass profile={self.profile!r}.")
        return self.settings

    def check_trained(self, registers: int | None = None, seeds=(), kind: str = "main") -> None:
        """A notebook's parameters must name models that params.yaml trains (else a clear error,
        not a StopIteration deep in the notebook)."""
        if not self.families:
            raise ConfigError(f"profile {self.profile!r} trains no models (pretrained.only: true): it runs the "
                              "pretrained stage alone (`make repro PROFILE=pretrained`)")
        have = {f.registers for f in self.of_kind(kind)}
        if registers is not None and registers not in have:
            raise ConfigError(f"registers={registers}: params.yaml trains no {kind} family with {registers} "
                              f"registers (have {sorted(have)}); choose one of those or add the family")
        trained = self.seeds if kind != "size" else self.size_seeds
        for s in seeds:
            if s not in trained:
                raise ConfigError(f"seed {s} is not trained (the {kind} families' seeds are {list(trained)})")

    def of_kind(self, kind: str) -> list:
        return [f for f in self.families.values() if f.kind == kind]

    @property
    def seeds(self) -> tuple:
        """Seeds of the main (and scene) families: every baseline/register pair is compared per seed."""
        return self.families["r0"].seeds

    @property
    def ablation_registers(self) -> tuple:
        return tuple(sorted(f.registers for f in self.of_kind("main")))

    @property
    def sizes(self) -> tuple:
        return tuple(f.size for f in self.of_kind("size"))

    @property
    def size_seeds(self) -> tuple:
        fams = self.of_kind("size")
        return fams[0].seeds if fams else ()

    @property
    def scene_registers(self) -> tuple:
        return tuple(sorted(f.registers for f in self.of_kind("scene")))

    def family(self, name: str) -> FamilyConfig:
        if name not in self.families:
            raise ConfigError(f"family {name!r} is not in params.yaml's families (have {sorted(self.families)})")
        return self.families[name]


@dataclass(frozen=True)
class RunConfig:
    """One training run: what the training notebook receives."""
    profile: str
    smoke: bool
    family: str           # main | size | scene
    name: str
    seed: int
    model: ModelConfig
    train: TrainConfig
    scene: SceneConfig | None = None

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------
def _coerce(value: Any, typ: Any, where: str) -> Any:
    typ_name = typ if isinstance(typ, str) else getattr(typ, "__name__", str(typ))
    if typ_name == "bool":
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where} must be true or false, not {value!r}")
    if typ_name == "int":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                (isinstance(value, float) and not value.is_integer()):
            raise ConfigError(f"{where} must be an integer, not {value!r}")
        return int(value)
    if typ_name == "float":
        if isinstance(value, str):
            try:
                value = float(value)  # YAML reads 1e-4 (without a dot) as a string
            except ValueError:
                raise ConfigError(f"{where} must be a number, not {value!r}") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{where} must be a finite number, not {value!r}")
        return float(value)
    if typ_name == "str":
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, not {value!r}")
        return value
    return value


def build(cls, raw: Mapping, where: str, **extra):
    """Instantiate dataclass `cls` from `raw`, refusing unknown or missing keys."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a mapping of keys, got {type(raw).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in extra}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in {where}; allowed: {sorted(fields)}. "
                          "Fix the spelling in params.yaml.")
    kwargs = dict(extra)
    for name, f in fields.items():
        if name in raw:
            kwargs[name] = _coerce(raw[name], f.type, f"{where}.{name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing key {where}.{name} in params.yaml")
    return cls(**kwargs)


def _positive(where: str, **values):
    for k, v in values.items():
        if v <= 0:
            raise ConfigError(f"{where}.{k} must be > 0, got {v}")


def _int_list(raw, where, lo=None, hi=None) -> tuple:
    if not isinstance(raw, list) or not raw:
        raise ConfigError(f"{where} must be a non-empty list")
    out = tuple(_coerce(v, "int", f"{where}[{i}]") for i, v in enumerate(raw))
    for v in out:
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            raise ConfigError(f"{where} holds {v}, outside [{lo}, {hi}]")
    if len(set(out)) != len(out):
        raise ConfigError(f"{where} repeats a value: {list(out)}")
    return out


def _check_keys(raw, allowed: set, where: str, required: set | None = None) -> None:
    """`raw` must be a mapping with keys from `allowed` only, and every key of `required` (default:
    all of `allowed`)."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where} must be a mapping of keys, got {type(raw).__name__}")
    unknown = sorted(set(raw) - allowed)
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in {where}; allowed: {sorted(allowed)}. "
                          "Fix the spelling in params.yaml.")
    missing = sorted((allowed if required is None else required) - set(raw))
    if missing:
        raise ConfigError(f"missing key(s) {missing} in {where} of params.yaml")


SETTINGS = ("smoke", "require_gpu", "model", "sizes_table", "train", "scene", "analysis")
TOP_LEVEL = ("profile", "families", "emergence", "pretrained") + SETTINGS


def parse_profile(name: str, raw: Mapping) -> Profile:
    """The settings blocks of params.yaml (every top-level key but `profile` and `families`)."""
    sizes = {}
    if not isinstance(raw["sizes_table"], Mapping) or not raw["sizes_table"]:
        raise ConfigError("sizes_table must map size names to embed_dim/depth/num_heads")
    for k, v in raw["sizes_table"].items():
        s = build(SizeConfig, v, f"sizes_table.{k}")
        _positive(f"sizes_table.{k}", embed_dim=s.embed_dim, depth=s.depth, num_heads=s.num_heads)
        if s.embed_dim % s.num_heads:
            raise ConfigError(f"sizes_table.{k}: embed_dim {s.embed_dim} is not divisible by "
                              f"num_heads {s.num_heads}")
        sizes[str(k)] = s
    model = build(ModelDefaults, raw["model"], "model")
    if model.size not in sizes:
        raise ConfigError(f"model.size={model.size!r} is not in sizes_table {sorted(sizes)}")
    if 28 % model.patch_size:
        raise ConfigError(f"model.patch_size={model.patch_size} must divide 28 (Fashion-MNIST side)")
    if model.layerscale < 0:
        raise ConfigError("model.layerscale must be >= 0 (0 turns LayerScale off)")
    train = build(TrainConfig, raw["train"], "train")
    _positive("train", epochs=train.epochs, batch_size=train.batch_size, lr=train.lr,
              ckpt_every=train.ckpt_every, probe_images=train.probe_images,
              eval_batch_size=train.eval_batch_size)
    if min(train.train_images, train.warmup_steps, train.shift, train.eval_images) < 0:
        raise ConfigError("train: train_images, warmup_steps, shift and eval_images must be >= 0")
    if not 0 <= train.label_smoothing < 1:
        raise ConfigError("train.label_smoothing must be in [0, 1)")
    scene = build(SceneConfig, raw["scene"], "scene")
    _positive("scene", canvas=scene.canvas, patch_size=scene.patch_size, epochs=scene.epochs,
              test_scenes=scene.test_scenes, scale_min=scene.scale_min)
    if scene.canvas % scene.patch_size:
        raise ConfigError(f"scene.patch_size={scene.patch_size} must divide canvas={scene.canvas}")
    if not scene.scale_min <= scene.scale_max <= scene.canvas:
        raise ConfigError("scene needs scale_min <= scale_max <= canvas")
    if not 0 <= scene.texture <= 1:
        raise ConfigError("scene.texture must be in [0, 1]")
    analysis = build(AnalysisConfig, raw["analysis"], "analysis")
    _positive("analysis", eval_images=analysis.eval_images, map_images=analysis.map_images,
              probe_train_images=analysis.probe_train_images, probe_test_images=analysis.probe_test_images,
              probe_epochs=analysis.probe_epochs, probe_lr=analysis.probe_lr,
              probe_seeds=analysis.probe_seeds, lost_k=analysis.lost_k,
              ttr_top_k=analysis.ttr_top_k, ttr_images=analysis.ttr_images)
    if analysis.ttr_max_layer < 0:
        raise ConfigError("analysis.ttr_max_layer must be >= 0 (0 = every block)")
    return Profile(name=name, smoke=_coerce(raw["smoke"], "bool", "smoke"),
                   require_gpu=_coerce(raw["require_gpu"], "bool", "require_gpu"),
                   model=model, sizes_table=sizes, train=train, scene=scene, analysis=analysis)


def parse_family(name: str, raw: Mapping, settings: Profile) -> FamilyConfig:
    where = f"families.{name}"
    _check_keys(raw, {"kind", "registers", "size", "seeds", "images"}, where)
    kind = _coerce(raw["kind"], "str", f"{where}.kind")
    if kind not in FAMILIES:
        raise ConfigError(f"{where}.kind must be one of {FAMILIES}, not {kind!r}")
    registers = _coerce(raw["registers"], "int", f"{where}.registers")
    if not 0 <= registers <= MAX_REGISTERS:
        raise ConfigError(f"{where}.registers={registers} is outside 0..{MAX_REGISTERS}")
    size = str(raw["size"])
    settings.size(size)
    fam = FamilyConfig(kind=kind, registers=registers, size=size, images=str(raw["images"]),
                       seeds=_int_list(raw["seeds"], f"{where}.seeds", 0))
    # the family's name is its folder, runs/<profile>/<kind>/<name>/, and what dvc.yaml's stage is called
    want = paths.run_group(run_name(kind, registers, 0, size))
    if name != want:
        raise ConfigError(f"family {name!r} ({kind}, {registers} registers, size {size}) must be named {want!r}")
    if fam.images != ("scene" if kind == "scene" else "model"):
        raise ConfigError(f"{where}.images must be {'scene' if kind == 'scene' else 'model'} for a {kind} family "
                          "(the params block that defines its images, so that dvc.yaml tracks it)")
    if kind == "size" and registers:
        raise ConfigError(f"{where}: the model-size sweep trains baselines only (registers: 0)")
    if kind != "size" and size != settings.model.size:
        raise ConfigError(f"{where}.size must be model.size ({settings.model.size!r}): only size families change it")
    return fam


def parse(raw: Mapping, source: str = "params.yaml") -> Study:
    _check_keys(raw, set(TOP_LEVEL), f"the top level of {source}")
    name = _coerce(raw["profile"], "str", "profile")
    settings = parse_profile(name, {k: raw[k] for k in SETTINGS})
    from . import emergence, pretrained
    pre = pretrained.parse(raw["pretrained"])
    if pre.only and raw["families"]:
        raise ConfigError(f"{source}: pretrained.only: true runs the pretrained stage alone, so `families` must be "
                          "{} (or set only: false to train them)")
    if pre.only:
        return Study(profile=name, families={}, settings=settings, emergence=emergence.parse(raw["emergence"]),
                     pretrained=pre)
    if not isinstance(raw["families"], Mapping) or not raw["families"]:
        raise ConfigError(f"{source}: `families` must map family names (r0, r4, size-ti, scene-r0 ...) to "
                          "kind/registers/size/seeds/images (only a profile with pretrained.only: true trains none)")
    families = {str(k): parse_family(str(k), v, settings) for k, v in raw["families"].items()}
    if "r0" not in families:
        raise ConfigError(f"{source}: families must include r0, the baseline (kind main, 0 registers)")
    for kinds in (("main", "scene"), ("size",)):   # baseline and register models are compared seed by seed
        seeds = {f.seeds for f in families.values() if f.kind in kinds}
        if len(seeds) > 1:
            raise ConfigError(f"{source}: the {' and '.join(kinds)} families must share their seeds "
                              f"(have {sorted(seeds)})")
    return Study(profile=name, families=families, settings=settings, emergence=emergence.parse(raw["emergence"]),
                 pretrained=pre)


def _read_yaml(path: Path) -> Mapping:
    if not path.is_file():
        raise ConfigError(f"{path} not found: run from the study's checkout (or set REGSTUDY_ROOT)")
    with open(path) as fh:
        try:
            return yaml.safe_load(fh)
        except yaml.YAMLError as e:
            raise ConfigError(f"{path} is not valid YAML: {e}") from None


def load(path: str | Path | None = None) -> Study:
    """Read and validate params.yaml (the study's, unless `path` is given)."""
    path = Path(path) if path else paths.params_file()
    return parse(_read_yaml(path), str(path))


def load_profile(profile: str | None = None, path: str | Path | None = None) -> Profile:
    """The settings of params.yaml, checked to be those of `profile` when it is given."""
    study = load(path)
    return study.select(profile) if profile else study.active


PRESETS = Path(__file__).resolve().parent / "profiles"


def presets() -> list:
    """Names of the profiles the study ships (src/regstudy/profiles/<name>.yaml)."""
    return sorted(p.stem for p in PRESETS.glob("*.yaml"))


def preset_path(name: str) -> Path:
    if name not in presets():
        raise ConfigError(f"no profile {name!r}: choose one of {presets()} (src/regstudy/profiles/)")
    return PRESETS / f"{name}.yaml"


def preset(name: str) -> Study:
    """A shipped profile, validated; its `profile:` must be its file's name."""
    path = preset_path(name)
    study = parse(_read_yaml(path), str(path))
    if study.profile != name:
        raise ConfigError(f"{path} says profile: {study.profile}; it must say profile: {name}")
    return study


# --------------------------------------------------------------------------------------------
# runs
# --------------------------------------------------------------------------------------------
FAMILIES = ("main", "size", "scene")


def run_name(family: str, registers: int = 0, seed: int = 0, size: str | None = None) -> str:
    if family == "main":
        return f"r{registers}-s{seed}"
    if family == "size":
        return f"size-{size}-s{seed}"
    if family == "scene":
        return f"scene-r{registers}-s{seed}"
    raise ConfigError(f"unknown run family {family!r}; use one of {FAMILIES}")


def run_config(profile: Profile, family: str, *, registers: int = 0, seed: int = 0,
               size: str | None = None) -> RunConfig:
    """The configuration of one training run of `profile`."""
    if family not in FAMILIES:
        raise ConfigError(f"unknown run family {family!r}; use one of {FAMILIES}")
    if not 0 <= registers <= MAX_REGISTERS:
        raise ConfigError(f"registers={registers} is outside 0..{MAX_REGISTERS}")
    if family == "size" and registers:
        raise ConfigError("the model-size sweep trains baselines only (registers=0)")
    size = size or profile.model.size
    s = profile.size(size)
    train = profile.train
    scene = None
    if family == "scene":
        scene = profile.scene
        img, patch = scene.canvas, scene.patch_size
        train = dataclasses.replace(train, epochs=scene.epochs, flip=False, shift=0)
    else:
        img, patch = 28, profile.model.patch_size
    model = ModelConfig(embed_dim=s.embed_dim, depth=s.depth, num_heads=s.num_heads, patch_size=patch,
                        img_size=img, mlp_ratio=profile.model.mlp_ratio,
                        layerscale=profile.model.layerscale, registers=registers)
    return RunConfig(profile=profile.name, smoke=profile.smoke, family=family,
                     name=run_name(family, registers, seed, size), seed=seed, model=model,
                     train=train, scene=scene)


def run_config_from_dict(d: Mapping) -> RunConfig:
    """Rebuild a RunConfig from its `to_dict()` form (as stored in checkpoints and logs)."""
    d = dict(d)
    model = build(ModelConfig, d.pop("model"), "run.model")
    train = build(TrainConfig, d.pop("train"), "run.train")
    scene_raw = d.pop("scene", None)
    scene = build(SceneConfig, scene_raw, "run.scene") if scene_raw else None
    return build(RunConfig, d, "run", model=model, train=train, scene=scene)
