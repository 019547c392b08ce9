"""Training loaders whose position inside an epoch survives a crash (exact mid-epoch resume).

The training order is a pure function of ``(seed, epoch)``: a seeded permutation of the dataset
(the one :class:`torch.utils.data.DistributedSampler` draws), dealt round-robin to the ranks.
:class:`ResumableDataLoader` implements ``state_dict`` / ``load_state_dict``, which Lightning
stores in every checkpoint (``loops.fit_loop.combined_loader``) and hands back on resume: the
resumed epoch then starts after the batches already trained on, without loading them.

The saved position is counted in global samples (batches x per-device batch x devices); exact
resume needs the same global batch size and number of devices as the interrupted run.

The state also carries the global RNG states (torch, numpy, python) at the time of the save,
restored just before the first resumed batch is fetched, so dropout and in-process
augmentations continue as in an uninterrupted run. DataLoader workers are reseeded from
``(seed, epoch, rank)`` each epoch; with ``num_workers > 0`` per-sample augmentations after a
mid-epoch resume are therefore reproducible but not identical to the uninterrupted run.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, DistributedSampler


class EpochShardSampler(DistributedSampler):
    """Seeded per-epoch permutation, cut to a multiple of ``num_replicas``, dealt round-robin.

    Identical to ``DistributedSampler(shuffle=True, drop_last=True)`` for the same seed and epoch,
    and usable without a process group (``num_replicas=1``). A ``DistributedSampler`` subclass so
    that Lightning sees the loader as sharded and does not replace the sampler (which would
    re-create the loader and lose its resume position). ``start`` skips the first ``start``
    samples of the global order (the part of the epoch already consumed by all ranks together).

    ``repeats > 1`` is repeated augmentation (DeiT's ``RASampler``): each index of the permutation
    appears ``repeats`` times in a row, so round-robin dealing sends the copies to different ranks
    (each augments its own), and the epoch keeps its length: it covers ``1/repeats`` of the dataset.
    """

    def __init__(
        self, dataset_len: int, num_replicas: int = 1, rank: int = 0, seed: int = 0, shuffle: bool = True, repeats: int = 1
    ) -> None:
        if not 0 <= rank < num_replicas:
            raise ValueError(f"rank {rank} outside [0, {num_replicas})")
        if repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {repeats}")
        # explicit replicas and rank: no process group is needed (sets epoch = 0, seed, shuffle)
        super().__init__(range(dataset_len), num_replicas, rank, shuffle=shuffle, seed=seed, drop_last=True)
        self.repeats = repeats
        self.dataset_len = dataset_len
        self.start = 0
        self.total = (dataset_len // num_replicas) * num_replicas

    def global_order(self) -> list[int]:
        """The epoch's order over all ranks (before sharding)."""
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.dataset_len, generator=g).tolist()
        else:
            order = list(range(self.dataset_len))
        if self.repeats > 1:
            order = [i for i in order for _ in range(self.repeats)]
        return order[: self.total]

    def __iter__(self) -> Iterator[int]:
        return iter(self.global_order()[self.start :][self.rank :: self.num_replicas])

    def __len__(self) -> int:
        # the full epoch: Lightning sizes the epoch (and the LR schedule) from this
        return self.total // self.num_replicas


def rng_states() -> dict[str, Any]:
    """The process-global RNG states that training code draws from."""
    name, keys, pos, has_gauss, gauss = np.random.get_state()
    # plain types and tensors only: checkpoints must stay loadable with torch.load(weights_only=True)
    numpy_state = [str(name), torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)]
    states: dict[str, Any] = {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict[str, Any]) -> None:
    torch.set_rng_state(states["torch"])
    name, keys, pos, has_gauss, gauss = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(states["python"])
    if "cuda" in states and torch.cuda.is_available() and len(states["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(states["cuda"])


class ResumableDataLoader(DataLoader):
    """A training DataLoader over an :class:`EpochShardSampler` that remembers how many batches
    of the current epoch it has handed out (see the module docstring).

    Lightning fetches sized training loaders without look-ahead, so at ``on_train_batch_end`` of
    batch ``i`` (where step checkpoints are written) exactly ``i + 1`` batches have been yielded.
    """

    def __init__(self, *args: Any, sampler: EpochShardSampler, seed: int = 0, **kwargs: Any) -> None:
        if not isinstance(sampler, EpochShardSampler):
            raise TypeError("ResumableDataLoader needs an EpochShardSampler")
        kwargs.setdefault("generator", torch.Generator())
        super().__init__(*args, sampler=sampler, **kwargs)
        self.seed = seed
        self.batches_yielded = 0  # in the current epoch, counting skipped ones
        self._pending: dict[str, Any] | None = None

    @property
    def shard_sampler(self) -> EpochShardSampler:
        return self.sampler  # type: ignore[return-value]

    def state_dict(self) -> dict[str, Any]:
        s = self.shard_sampler
        return {
            "epoch": s.epoch,
            "global_samples": self.batches_yielded * int(self.batch_size or 1) * s.num_replicas,
            "seed": s.seed,
            "rng": rng_states(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._pending = dict(state)

    def __iter__(self) -> Iterator[Any]:  # type: ignore[override]
        # a generator: this body runs at the first fetch of the epoch, after Lightning has called
        # set_epoch, so the pending resume state can be matched against the epoch being started
        s = self.shard_sampler
        s.start, skipped = 0, 0
        pending, self._pending = self._pending, None
        if pending is not None:
            if pending.get("epoch") == s.epoch and pending.get("seed", s.seed) == s.seed:
                per_step = int(self.batch_size or 1) * s.num_replicas
                s.start = min(int(pending["global_samples"]), s.total)
                skipped = s.start // per_step
            set_rng_states(pending["rng"])
        # worker seeds from (seed, epoch, rank), not from the global RNG
        self.generator.manual_seed((self.seed * 1_000_003 + s.epoch) * 1009 + s.rank)  # type: ignore[union-attr]
        self.batches_yielded = skipped
        for batch in super().__iter__():
            self.batches_yielded += 1
            yield batch
