"""What a training checkpoint holds and its safetensors form: :class:`TrainState`, converted here and only here.

``latest.safetensors`` holds the whole state of a run (:class:`TrainState`): the tensors in safetensors, the
rest as JSON in its header, beside what identifies the run (:class:`RunIdentity`), which a resume must match
so that it continues exactly. ``best.safetensors`` holds the best weights. :mod:`funnelcli.artifact` writes
and verifies the files (atomically, with checksums); this module decides what goes in them.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from funnelcli import artifact
from funnelcli.distributed import Ranks
from funnelcli.errors import Refused, UserError
from funnelcli.models.recipe import TrainingSettings
from funnelcli.strict_json import json_safe

START_OVER = artifact.START_OVER


@dataclass
class RankState:
    """What differs between ranks: the RNGs, the batch order over the rank's shard and its running sum."""

    torch_rng: torch.Tensor
    batches_rng: torch.Tensor
    order: torch.Tensor
    train_sum: torch.Tensor
    cursor: int
    cuda_rng: torch.Tensor | None = None  # on a GPU only
    order_rng: torch.Tensor | None = None  # only with rows in host memory, whose order is drawn there

    def to_tensors(self) -> dict[str, torch.Tensor]:
        tensors = {
            "rng/torch": self.torch_rng,
            "rng/batches": self.batches_rng,
            "loop/order": self.order,
            "loop/train_sum": self.train_sum,
            "loop/cursor": torch.tensor(self.cursor, dtype=torch.int64),
        }
        if self.cuda_rng is not None:
            tensors["rng/cuda"] = self.cuda_rng
        if self.order_rng is not None:
            tensors["rng/order"] = self.order_rng
        return tensors

    @classmethod
    def from_tensors(cls, tensors: dict[str, torch.Tensor], *, cursor: int, cuda: bool, streamed: bool) -> RankState:
        """``cursor`` (the header's) stands in for checkpoints written before each rank kept its own."""
        return cls(
            torch_rng=tensors["rng/torch"],
            batches_rng=tensors["rng/batches"],
            order=tensors["loop/order"],
            train_sum=tensors["loop/train_sum"],
            cursor=int(tensors["loop/cursor"]) if "loop/cursor" in tensors else cursor,
            cuda_rng=tensors["rng/cuda"] if cuda else None,
            order_rng=tensors["rng/order"] if streamed else None,
        )

    def cpu(self) -> RankState:
        """A copy whose tensors are in host memory, as :func:`torch.distributed.all_gather_object` wants them."""
        return replace(self, **{name: value.cpu() for name, value in vars(self).items() if torch.is_tensor(value)})


@dataclass(frozen=True)
class RunIdentity:
    """What a checkpoint records of the run that made it; a resume must match every field to continue exactly."""

    settings: TrainingSettings
    data_sha256: str  # of the training rows, the validation rows and the dequantization mask
    device: str  # the device type: other kernels would give other arithmetic
    world_size: int

    def check(self, folder: Path, document: dict, rows: int) -> None:
        """Refuse, in one line, a latest checkpoint from another run or a damaged one; ``rows`` training rows."""
        path = folder / artifact.LATEST
        if document.get("kind") != "latest":
            raise Refused(f"{path} is not a resumable checkpoint", START_OVER)
        _check_latest(path, document, rows)
        start_over = "resume with the command that started the run, or " + START_OVER
        saved = document.get("settings", {})
        changed = [key for key, value in _as_saved(self.settings).items() if saved.get(key) != value]
        if changed:
            shown = ", ".join(f"{key} {saved.get(key)!r} -> {getattr(self.settings, key)!r}" for key in changed)
            raise Refused(f"the checkpoint in {folder} was made with other settings ({shown})", start_over)
        if document.get("data_sha256") != self.data_sha256:
            raise Refused(f"the checkpoint in {folder} was made with other data", start_over)
        if document.get("world_size", 1) != self.world_size:
            raise UserError(
                f"the checkpoint in {folder} was made by {document.get('world_size', 1)} process(es) and "
                f"this run has {self.world_size}; resume it with as many (torchrun --nproc_per_node) so that "
                "the run continues exactly"
            )
        if document.get("device") != self.device:
            raise UserError(
                f"the checkpoint in {folder} was made on {document.get('device')}; resume it there "
                f"(--device {document.get('device')}) so that the run continues exactly"
            )


@dataclass
class TrainState:
    """Everything ``latest.safetensors`` holds beyond :class:`RunIdentity`: where the run stands, the weights, the
    best weights, Adam's state, the schedule's and every rank's :class:`RankState`."""

    step: int
    cursor: int  # the writing rank's; each :class:`RankState` has its own
    best_val: float
    best_step: int
    evaluations_without_gain: int
    skipped: int
    nonfinite_in_a_row: int
    train_rows: int  # trained on since the last validation pass
    history: list[dict]
    last_train: float
    stopped_early: bool
    seconds: float  # of every session so far
    step_seconds: float  # of this session's steps
    steps_timed: int  # this session's steps
    model: dict[str, torch.Tensor]
    best: dict[str, torch.Tensor]
    optimizer: dict  # Adam's state_dict
    scheduler: dict  # the schedule's state_dict
    per_rank: dict[int, RankState]  # every rank's when written; only this rank's when read
    interrupted_by: str | None = None  # the name of the signal that stopped the run

    def to_safetensors(self, run: RunIdentity) -> tuple[dict[str, torch.Tensor], dict]:
        """The tensors and the header document of ``latest.safetensors``."""
        tensors = {f"model/{name}": value for name, value in self.model.items()}
        tensors.update({f"best/{name}": value for name, value in self.best.items()})
        optimizer_tensors, scalars = _split_optimizer(self.optimizer)
        tensors.update(optimizer_tensors)
        if run.world_size > 1:
            for rank, state in self.per_rank.items():
                tensors.update({f"rank{rank}/{name}": value for name, value in state.to_tensors().items()})
        else:
            tensors.update(self.per_rank[0].to_tensors())
        document = {
            "kind": "latest",
            "step": self.step,
            "steps": run.settings.steps,
            "settings": asdict(run.settings),
            "data_sha256": run.data_sha256,
            "device": run.device,
            "world_size": run.world_size,
            "cursor": self.cursor,
            "best_val": json_safe(self.best_val),
            "best_step": self.best_step,
            "evaluations_without_gain": self.evaluations_without_gain,
            "skipped": self.skipped,
            "nonfinite_in_a_row": self.nonfinite_in_a_row,
            "train_rows": self.train_rows,
            "history": json_safe(self.history),
            "last_train": json_safe(self.last_train),
            "stopped_early": self.stopped_early,
            "seconds": self.seconds,
            "step_seconds": self.step_seconds,
            "steps_timed": self.steps_timed,
            "optimizer": {"param_groups": self.optimizer["param_groups"], "scalars": scalars},
            "scheduler": self.scheduler,
            "interrupted_by": self.interrupted_by,
        }
        return tensors, document

    @classmethod
    def from_safetensors(
        cls, tensors: dict[str, torch.Tensor], document: dict, ranks: Ranks, *, cuda: bool, streamed: bool
    ) -> TrainState:
        """This rank's view of a checkpoint whose header :meth:`RunIdentity.check` passed. A tensor missing or
        out of place raises KeyError, TypeError or ValueError."""
        own = _group(tensors, f"rank{ranks.rank}/") if ranks.active else tensors
        cursor = int(document["cursor"])
        return cls(
            step=int(document["step"]),
            cursor=cursor,
            best_val=_float(document["best_val"], -math.inf),
            best_step=int(document["best_step"]),
            evaluations_without_gain=int(document["evaluations_without_gain"]),
            skipped=int(document["skipped"]),
            nonfinite_in_a_row=int(document["nonfinite_in_a_row"]),
            train_rows=int(document["train_rows"]),
            history=list(document["history"]),
            last_train=_float(document["last_train"], math.nan),
            stopped_early=bool(document["stopped_early"]),
            seconds=float(document["seconds"]),
            step_seconds=float(document["step_seconds"]),
            steps_timed=int(document["steps_timed"]),
            model=_group(tensors, "model/"),
            best=_group(tensors, "best/"),
            optimizer=_join_optimizer(tensors, document["optimizer"]),
            scheduler=document["scheduler"],
            per_rank={ranks.rank: RankState.from_tensors(own, cursor=cursor, cuda=cuda, streamed=streamed)},
            interrupted_by=document.get("interrupted_by"),
        )


def write_latest(folder: Path, state: TrainState, run: RunIdentity) -> None:
    tensors, document = state.to_safetensors(run)
    artifact.write_checkpoint(folder / artifact.LATEST, tensors, document)


def write_best(folder: Path, weights: dict[str, torch.Tensor], *, step: int, steps: int, val_log_prob: float) -> None:
    document = {"kind": "best", "step": step, "steps": steps, "val_log_prob": json_safe(val_log_prob)}
    artifact.write_checkpoint(folder / artifact.BEST, dict(weights), document)


def _as_saved(settings: TrainingSettings) -> dict:
    """``settings`` as a checkpoint's header holds them (JSON: tuples become lists)."""
    return json.loads(json.dumps(asdict(settings)))


def latest_made_with(folder: Path, settings: TrainingSettings) -> bool:
    """Whether the latest checkpoint in ``folder`` records these training settings (its verified header is read,
    its tensors are not)."""
    document = artifact.checkpoint_header(folder / artifact.LATEST)
    return document is not None and document.get("settings") == _as_saved(settings)


def read_latest(folder: Path, run: RunIdentity, rows: int) -> tuple[dict[str, torch.Tensor], dict]:
    """The tensors and header of the latest checkpoint in ``folder``, verified and matched against ``run``."""
    tensors, document = artifact.read_checkpoint(folder / artifact.LATEST)
    run.check(folder, document, rows)
    return tensors, document


def fingerprint(*tensors: torch.Tensor | None) -> str:
    """A SHA-256 of the dtypes, shapes and bytes of ``tensors`` (None counts as itself)."""
    digest = hashlib.sha256()
    for tensor in tensors:
        if tensor is None:
            digest.update(b"none")
            continue
        tensor = tensor.detach().to("cpu").contiguous()
        digest.update(f"{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


# -- Adam's state: tensors in safetensors, the rest in the header ----------------------------------------------


def _split_optimizer(optimizer: dict) -> tuple[dict[str, torch.Tensor], dict[str, dict]]:
    """(``optimizer/{index}/{key}`` tensors, the JSON scalars of each parameter index) of Adam's state_dict."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict] = {}
    for index, state in optimizer["state"].items():
        for key, value in state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer/{index}/{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = value
    return tensors, scalars


def _join_optimizer(tensors: dict[str, torch.Tensor], saved: dict) -> dict:
    """Adam's state_dict from the ``optimizer/`` tensors and the header's ``optimizer`` table."""
    state: dict[int, dict] = {}
    for name, value in _group(tensors, "optimizer/").items():
        index, key = name.split("/", 1)
        state.setdefault(int(index), {})[key] = value
    for index, values in saved["scalars"].items():
        state.setdefault(int(index), {}).update(values)
    groups = saved["param_groups"]
    for group in groups:
        # JSON has no tuples: Adam gets back the tuple it saved.
        if isinstance(group.get("betas"), list):
            group["betas"] = tuple(group["betas"])
    return {"state": state, "param_groups": groups}


def _group(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {name[len(prefix) :]: value for name, value in tensors.items() if name.startswith(prefix)}


# -- the header --------------------------------------------------------------------------------------------------


def _whole(value, low: int = 0, high: int = 2**63 - 1) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high


def _number(value, low: float = -math.inf) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value >= low


#: The fields of a latest checkpoint's header beyond those every checkpoint has: (test, what it must be).
_LATEST_FIELDS = {
    "settings": (lambda v: isinstance(v, dict), "a table"),
    "data_sha256": (lambda v: isinstance(v, str), "a string"),
    "device": (lambda v: isinstance(v, str), "a string"),
    "world_size": (lambda v: _whole(v, 1, 1_000_000), "a whole number >= 1"),
    "cursor": (_whole, "a whole number"),
    "best_val": (lambda v: v is None or _number(v), "null or a finite number"),
    "best_step": (_whole, "a whole number"),
    "evaluations_without_gain": (_whole, "a whole number"),
    "skipped": (_whole, "a whole number"),
    "nonfinite_in_a_row": (_whole, "a whole number"),
    "train_rows": (_whole, "a whole number"),
    "history": (lambda v: isinstance(v, list) and all(isinstance(r, dict) for r in v), "a list of records"),
    "last_train": (lambda v: v is None or _number(v), "null or a finite number"),
    "stopped_early": (lambda v: isinstance(v, bool), "true or false"),
    "seconds": (lambda v: _number(v, 0), "a number >= 0"),
    "step_seconds": (lambda v: _number(v, 0), "a number >= 0"),
    "steps_timed": (_whole, "a whole number"),
    "optimizer": (
        lambda v: (
            isinstance(v, dict) and isinstance(v.get("param_groups"), list) and isinstance(v.get("scalars"), dict)
        ),
        "a table with param_groups and scalars",
    ),
    "scheduler": (lambda v: isinstance(v, dict), "a table"),
    "interrupted_by": (lambda v: v is None or isinstance(v, str), "null or a signal name"),
}


def _check_latest(path: Path, document: dict, rows: int) -> None:
    """Refuse, in one line naming the field, a latest checkpoint whose header fields have the wrong type or lie
    out of range (``step`` and ``steps`` are checked by :func:`artifact.read_checkpoint`)."""
    for name, (test, expected) in _LATEST_FIELDS.items():
        if name not in document or not test(document[name]):
            raise Refused(f"checkpoint {path} is damaged (header field {name} is not {expected})", START_OVER)
    step = document["step"]
    for name, value, high in (
        ("best_step", document["best_step"], step),
        ("skipped", document["skipped"], step),
        ("nonfinite_in_a_row", document["nonfinite_in_a_row"], step),
        ("steps_timed", document["steps_timed"], step),
        ("cursor", document["cursor"], rows),
    ):
        if value > high:
            raise Refused(f"checkpoint {path} is damaged (header field {name} = {value} exceeds {high})", START_OVER)


def _float(value: float | None, default: float) -> float:
    return default if value is None else float(value)
