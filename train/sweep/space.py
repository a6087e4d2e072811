"""sweep.yaml: what a sweep searches (config keys with ranges or choices), what it optimises
(a validation metric and its direction), what every trial shares, and how trials are pruned.

Everything is checked when the file is read, each problem a one-line error naming the key,
so that a sweep never starts trials it would later refuse: unknown keys, empty ranges and
values the train config rejects (each end of a range and every choice is resolved into a
whole train config with the shared settings).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from blendsync.shared.config import canonical_json, plain, short_hash
from blendsync.train.core.config import VALIDATION_METRICS, ConfigOverrides, TrainConfig, setting_keys

# bstrain fit's options that set a config key, by the names a sweep file may also use.
FIT_OPTION_KEYS = {
    "epochs": "optim.epochs",
    "max_steps": "optim.max_steps",
    "batch_streams": "stream.batch_streams",
    "stride": "stream.stride",
    "frames_per_window": "stream.frames_per_window",
    "loss": "loss.preset",
    "validate_every": "validation.every_steps",
    "patience": "validation.patience",
}
DIRECTIONS = {"max": "maximize", "min": "minimize"}
PRUNERS = ("median", "hyperband", "none")
SAMPLERS = ("tpe", "random")
# Seeds numpy and torch take (a seed of 10**35 failed deep inside a trial).
MAX_SEED = 2**32 - 1
# Trials a sweep file may queue to run first (20,000 took 117 s and 1 GB before one trial ran).
MAX_ENQUEUED = 1000
TOP_KEYS = {
    "metric", "direction", "fit", "space", "pruner", "sampler", "seed", "trial_cpu_s", "enqueue", "folds",
    "min_amplitude",
}  # fmt: skip
# Most folds a sweep may cut its takes into (every fold is a whole training run per trial).
MAX_FOLDS = 50


class SpaceError(ValueError):
    """A sweep file that cannot be run; the message names the key."""


@dataclass(frozen=True, kw_only=True)
class Param:
    """One searched config key: a float or int range (log-uniform when log) or choices."""

    key: str
    kind: str  # "float" | "int" | "choice"
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple = ()

    def suggest(self, trial) -> Any:
        """The value an Optuna trial draws for this key (its parameter is named by the key)."""
        if self.kind == "choice":
            return trial.suggest_categorical(self.key, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.key, self.low, self.high, step=self.step, log=self.log)

    def extremes(self) -> list:
        return list(self.choices) if self.kind == "choice" else [self.low, self.high]

    def holds(self, value: Any) -> bool:
        """value is one this parameter can draw (a choice; in range, whole on an integer key,
        on the step grid)."""
        if self.kind == "choice":
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not self.low <= value <= self.high:
            return False
        if self.kind == "int" and value != int(value):
            return False
        if self.step is not None:
            k = (value - self.low) / self.step
            return abs(k - round(k)) < 1e-9
        return True

    def to_dict(self) -> dict:
        if self.kind == "choice":
            return {"key": self.key, "choices": list(self.choices)}
        d = {"key": self.key, "kind": self.kind, "low": self.low, "high": self.high, "log": self.log}
        return d | ({"step": self.step} if self.step is not None else {})


@dataclass(frozen=True, kw_only=True)
class PrunerSpec:
    """median: a trial stops when its validation is worse than the median of earlier trials'
    at the same step (after startup_trials have finished and from warmup_steps on);
    hyperband: Optuna's Hyperband with rungs counted in optimiser steps, from min_steps (the
    validation interval) to max_steps (the trials' length), fixed so that every process
    builds the same brackets; none: every trial runs to its end."""

    kind: str = "median"
    startup_trials: int = 5
    warmup_steps: int = 0
    min_steps: int = 0
    max_steps: int = 0

    def build(self):
        import optuna

        if self.kind == "median":
            return optuna.pruners.MedianPruner(n_startup_trials=self.startup_trials, n_warmup_steps=self.warmup_steps)
        if self.kind == "hyperband":
            return optuna.pruners.HyperbandPruner(min_resource=self.min_steps, max_resource=self.max_steps)
        return optuna.pruners.NopPruner()


@dataclass(frozen=True, kw_only=True)
class SweepSpec:
    """A sweep file, checked and in canonical form (stored in the sweep folder; its hash
    names the study so that --resume refuses a different search)."""

    metric: str = "skill"
    direction: str = "maximize"
    fit: tuple[tuple[str, Any], ...] = ()  # (dotted key, value), sorted
    space: tuple[Param, ...] = ()
    pruner: PrunerSpec = PrunerSpec()
    sampler: str = "tpe"
    seed: int = 0
    trial_cpu_s: float = 0.0
    enqueue: tuple[tuple[tuple[str, Any], ...], ...] = ()
    # Score each trial across this many folds of the takes (train.sweep.folds; 0: on the
    # manifest's own validation split).
    folds: int = 0
    # A trial whose validation amplitude ratio (at its best value, the folds' mean) is below
    # this fails: it is never the best (0: no floor).
    min_amplitude: float = 0.0

    def to_dict(self) -> dict:
        """Canonical form; folds and min_amplitude only when set, so the hash (the study's
        name) of a sweep file without them is what it was before they existed."""
        extra = {"folds": self.folds} if self.folds else {}
        extra |= {"min_amplitude": self.min_amplitude} if self.min_amplitude else {}
        return plain(
            extra
            | {
                "metric": self.metric,
                "direction": self.direction,
                "fit": dict(self.fit),
                "space": [p.to_dict() for p in self.space],
                "pruner": dataclasses.asdict(self.pruner),
                "sampler": self.sampler,
                "seed": self.seed,
                "trial_cpu_s": self.trial_cpu_s,
                "enqueue": [dict(e) for e in self.enqueue],
            }
        )

    def to_json(self) -> str:
        return canonical_json(self.to_dict())

    @property
    def hash(self) -> str:
        return short_hash(self.to_dict())

    @classmethod
    def from_stored(cls, d: dict) -> SweepSpec:
        """The form to_dict() wrote (sweep.json) back into a spec."""
        space = []
        for p in d["space"]:
            if "choices" in p:
                space.append(Param(key=p["key"], kind="choice", choices=tuple(p["choices"])))
            else:
                space.append(
                    Param(key=p["key"], kind=p["kind"], low=p["low"], high=p["high"], log=p["log"], step=p.get("step"))
                )
        return cls(
            metric=d["metric"],
            direction=d["direction"],
            fit=tuple(sorted(d["fit"].items())),
            space=tuple(space),
            pruner=PrunerSpec(**d["pruner"]),
            sampler=d["sampler"],
            seed=d["seed"],
            trial_cpu_s=d["trial_cpu_s"],
            enqueue=tuple(tuple(sorted(e.items())) for e in d["enqueue"]),
            folds=int(d.get("folds", 0)),
            min_amplitude=float(d.get("min_amplitude", 0.0)),
        )

    def sampler_object(self, trials_so_far: int = 0):
        """The sampler, seeded by the sweep's seed and the trials the study already holds: a
        resumed sweep draws on where it stopped instead of repeating its first draws. TPE
        with a constant liar, so that trials running at once are not drawn alike."""
        import optuna

        seed = self.seed + trials_so_far
        if self.sampler == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        return optuna.samplers.TPESampler(seed=seed, constant_liar=True)

    def trial_settings(self, params: dict) -> dict:
        """Every config key a trial sets: the shared fit settings, the metric best.pt keeps,
        the seed (the sweep's, the same for every trial unless searched: the trials then
        differ only by their parameters) and the trial's parameters."""
        return {"seed": self.seed, **dict(self.fit), **params, "validation.metric": self.metric}


def overrides_for(settings: dict, source: str) -> ConfigOverrides:
    return ConfigOverrides.from_settings([(k, v, f"{source} {k}") for k, v in settings.items()])


def resolve_config(base: TrainConfig, settings: dict, device_type: str = "cpu") -> TrainConfig:
    """The train config a trial with these settings runs (as bstrain fit resolves it)."""
    return overrides_for(settings, "sweep").resolve(base, device_type)[0]


def load_spec(path: Path, base: TrainConfig | None = None) -> SweepSpec:
    """Read and check a sweep file; SpaceError names the file and the key."""
    try:
        raw = yaml.load(Path(path).read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except OSError as e:
        raise SpaceError(f"{path}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError as e:
        raise SpaceError(f"{path}: not a UTF-8 text file ({e.reason} at byte {e.start})") from None
    except yaml.YAMLError as e:
        raise SpaceError(f"{path}: not YAML: {str(e).splitlines()[0]}") from None
    except RecursionError:
        raise SpaceError(f"{path}: nested too deeply to be a sweep file") from None
    try:
        return parse_spec(raw, base or TrainConfig())
    except SpaceError as e:
        raise SpaceError(f"{path}: {e}") from None


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing a key written twice in one mapping (YAML keeps the last
    silently: a sweep would run another search than the one read)."""


def _unique_mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    seen = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"key {key!r} written twice (line {key_node.start_mark.line + 1})", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def parse_spec(raw: Any, base: TrainConfig) -> SweepSpec:
    if not isinstance(raw, dict):
        raise SpaceError("expected a mapping with metric, fit and space")
    unknown = sorted(set(raw) - TOP_KEYS)
    if unknown:
        raise SpaceError(f"unknown key(s) {unknown}; allowed: {sorted(TOP_KEYS)}")
    metric = raw.get("metric", "skill")
    if not isinstance(metric, str) or metric not in VALIDATION_METRICS:
        raise SpaceError(f"metric: {metric!r} is not a validation metric; one of {sorted(VALIDATION_METRICS)}")
    direction = DIRECTIONS[VALIDATION_METRICS[metric]]
    if raw.get("direction", direction) != direction:
        raise SpaceError(
            f"direction: {metric} is {direction}d (best.pt keeps its {'best' if direction == 'maximize' else 'lowest'}"
            f" value); leave direction out, got {raw['direction']!r}"
        )
    fit = _fit_settings(raw.get("fit") or {})
    space = _space(raw.get("space"))
    overlap = sorted(set(fit) & {p.key for p in space})
    if overlap:
        raise SpaceError(f"space.{overlap[0]}: also set under fit; a key is either shared or searched")
    for key, where in [(k, "fit") for k in fit] + [(p.key, "space") for p in space]:
        if key == "validation.metric":
            raise SpaceError(f"{where}.validation.metric: the sweep's metric sets it (metric: {metric})")
    spec = SweepSpec(
        metric=metric,
        direction=direction,
        fit=tuple(sorted(fit.items())),
        space=tuple(space),
        pruner=_pruner(raw.get("pruner", "median"), fit),
        sampler=_choice("sampler", raw.get("sampler", "tpe"), SAMPLERS),
        seed=_integer("seed", raw.get("seed", 0), 0, MAX_SEED),
        trial_cpu_s=_nonnegative("trial_cpu_s", raw.get("trial_cpu_s", 0.0)),
        enqueue=_enqueue(raw.get("enqueue") or [], space),
        folds=_folds(raw.get("folds", 0)),
        min_amplitude=_nonnegative("min_amplitude", raw.get("min_amplitude", 0.0)),
    )
    _check_values(spec, base)
    return spec


def config_key(name: Any, where: str) -> str:
    """A train config key from a dotted key or one of bstrain fit's option names."""
    if not isinstance(name, str):
        raise SpaceError(f"{where}: key {name!r} is not text")
    known = setting_keys()
    if name in known:
        return name
    alias = FIT_OPTION_KEYS.get(name.replace("-", "_"))
    if alias:
        return alias
    near = [k for k in known if k.split(".")[-1] == name.split(".")[-1]] or difflib.get_close_matches(name, known, 2)
    hint = f"; did you mean {' or '.join(near)}?" if near else "; see bstrain write-default-config"
    raise SpaceError(f"{where}.{name}: unknown config key{hint}")


def _fit_settings(fit: Any) -> dict:
    if not isinstance(fit, dict):
        raise SpaceError("fit: expected a mapping of config keys to values")
    out = {}

    def put(name: str, value: Any) -> None:
        key = config_key(name, "fit")
        if key in out:
            raise SpaceError(f"fit.{name}: {key} is given twice")
        out[key] = value

    for name, value in fit.items():
        if isinstance(value, dict) and name in _sections():  # a nested section: {optim: {epochs: 10}}
            for k, v in value.items():
                put(f"{name}.{k}", v)
        else:
            put(name, value)
    return out


def _sections() -> set[str]:
    return {k.split(".")[0] for k in setting_keys() if "." in k}


def _space(space: Any) -> list[Param]:
    if not isinstance(space, dict) or not space:
        raise SpaceError("space: expected a mapping of config keys to ranges or choices, with at least one key")
    params, seen = [], set()
    for name, spec in space.items():
        key = config_key(name, "space")
        if key in seen:
            raise SpaceError(f"space.{name}: {key} given twice")
        seen.add(key)
        params.append(_param(key, spec))
    return params


def _param(key: str, spec: Any) -> Param:
    where = f"space.{key}"
    if isinstance(spec, list):
        if not spec:
            raise SpaceError(f"{where}: no choices")
        if len(set(map(repr, spec))) != len(spec):
            raise SpaceError(f"{where}: a choice is given twice: {spec}")
        if any(isinstance(c, (dict, list)) for c in spec):
            raise SpaceError(f"{where}: choices must be single values, got {spec}")
        return Param(key=key, kind="choice", choices=tuple(spec))
    if not isinstance(spec, dict):
        raise SpaceError(f"{where}: expected {{low, high[, log, step]}} or a list of choices, got {spec!r}")
    bad = sorted(set(spec) - {"low", "high", "log", "step"})
    if bad or "low" not in spec or "high" not in spec:
        raise SpaceError(f"{where}: a range has low and high (and may have log, step); got keys {sorted(spec)}")
    low, high, log, step = spec["low"], spec["high"], spec.get("log", False), spec.get("step")
    if not isinstance(log, bool):
        raise SpaceError(f"{where}: log must be true or false, got {log!r}")
    numbers = [v for v in (low, high, step) if v is not None]
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) for v in numbers):
        raise SpaceError(f"{where}: low, high and step must be finite numbers, got {spec}")
    if not low < high:
        raise SpaceError(f"{where}: empty range: low {low} is not below high {high}")
    if log and low <= 0:
        raise SpaceError(f"{where}: a log range needs low > 0, got {low}")
    if log and step is not None:
        raise SpaceError(f"{where}: log and step cannot be combined")
    if step is not None and step <= 0:
        raise SpaceError(f"{where}: step must be > 0, got {step}")
    kind = "int" if all(isinstance(v, int) for v in numbers) and _is_int_key(key) else "float"
    return Param(key=key, kind=kind, low=low, high=high, log=log, step=step)


def _is_int_key(key: str) -> bool:
    f = setting_keys().get(key)
    return f is not None and f.type in (int, "int")


def _pruner(spec: Any, fit: dict) -> PrunerSpec:
    if isinstance(spec, str):
        spec = {"type": spec}
    if not isinstance(spec, dict):
        raise SpaceError(f"pruner: expected median, hyperband, none or a mapping with type, got {spec!r}")
    allowed = {"type", "startup_trials", "warmup_steps", "min_steps", "max_steps"}
    bad = sorted(set(spec) - allowed)
    if bad:
        raise SpaceError(f"pruner: unknown key(s) {bad}; allowed: {sorted(allowed)}")
    kind = _choice("pruner.type", spec.get("type", "median"), PRUNERS)
    min_steps = _integer("pruner.min_steps", spec.get("min_steps", fit.get("validation.every_steps", 0)), minimum=0)
    max_steps = _integer("pruner.max_steps", spec.get("max_steps", fit.get("optim.max_steps", 0)), minimum=0)
    if kind == "hyperband" and not 0 < min_steps < max_steps:
        raise SpaceError(
            "pruner: hyperband counts its rungs in optimiser steps: give validation.every_steps and "
            f"optim.max_steps under fit (or pruner.min_steps < pruner.max_steps), got {min_steps} and {max_steps}"
        )
    return PrunerSpec(
        kind=kind,
        startup_trials=_integer("pruner.startup_trials", spec.get("startup_trials", 5), minimum=0),
        warmup_steps=_integer("pruner.warmup_steps", spec.get("warmup_steps", 0), minimum=0),
        min_steps=min_steps,
        max_steps=max_steps,
    )


def _enqueue(items: Any, space: list[Param]) -> tuple:
    if not isinstance(items, list):
        raise SpaceError("enqueue: expected a list of {config key: value} trials to run first")
    if len(items) > MAX_ENQUEUED:
        raise SpaceError(f"enqueue: {len(items)} trials; at most {MAX_ENQUEUED} are run first")
    by_key = {p.key: p for p in space}
    out = []
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise SpaceError(f"enqueue[{i}]: expected a mapping of searched keys to values")
        params = {}
        for name, value in item.items():
            key = config_key(name, f"enqueue[{i}]")
            if key not in by_key:
                raise SpaceError(f"enqueue[{i}].{name}: not a searched key")
            if not by_key[key].holds(value):
                raise SpaceError(f"enqueue[{i}].{name}: {value!r} is outside space.{key}")
            params[key] = value
        out.append(tuple(sorted(params.items())))
    return tuple(out)


def _check_values(spec: SweepSpec, base: TrainConfig) -> None:
    """The shared settings, then each end of every range and every choice, resolved into a
    whole config: a value the config rejects is named by its key. (A combination of values
    fails its trial alone, enqueued or drawn: the same path for both.)"""
    shared = spec.trial_settings({})
    try:
        resolve_config(base, shared)
    except (ValueError, TypeError) as e:
        raise SpaceError(f"fit: {_reason(e)}") from None
    for p in spec.space:
        for value in p.extremes():
            try:
                resolve_config(base, {**shared, p.key: value})
            except (ValueError, TypeError) as e:
                raise SpaceError(f"space.{p.key}: {value!r} is rejected by the train config: {_reason(e)}") from None


def _reason(e: Exception) -> str:
    return str(e).removeprefix("invalid train config: ")


def _choice(key: str, value: Any, allowed: tuple) -> str:
    if value not in allowed:
        raise SpaceError(f"{key}: {value!r}; one of {list(allowed)}")
    return value


def _integer(key: str, value: Any, minimum: int | None = None, maximum: int | None = None) -> int:
    bounds = (f" >= {minimum}" if minimum is not None else "") + (f" and <= {maximum}" if maximum is not None else "")
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or (minimum is not None and value < minimum)
        or (maximum is not None and value > maximum)
    ):
        raise SpaceError(f"{key}: expected an integer{bounds}, got {value!r}")
    return value


def _folds(value: Any) -> int:
    """0 (off) or 2..MAX_FOLDS."""
    n = _integer("folds", value, 0, MAX_FOLDS)
    if n == 1:
        raise SpaceError("folds: 1 fold is the manifest's own split; give 2 or more, or 0 (off)")
    return n


def _nonnegative(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < math.inf:
        raise SpaceError(f"{key}: expected a finite number >= 0, got {value!r}")
    return float(value)
