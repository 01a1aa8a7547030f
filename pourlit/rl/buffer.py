"""A circular replay buffer of preallocated tensors, sampled uniformly with replacement."""

from __future__ import annotations

from typing import Any

import torch


class ReplayBuffer:
    """Fixed-capacity FIFO storage of transitions, one preallocated tensor per key.

        buf = ReplayBuffer(100_000, {"obs": (d_s,), "z": (n_z,), "reward": ()}, device)
        buf.add({"obs": obs, "z": z, "reward": r})        # each (B, *spec); oldest overwritten
        batch = buf.sample(256, generator)                  # each (256, *spec)

    ``specs`` maps each key to the shape of ONE entry (``()`` for scalars); ``dtypes`` gives a
    key's dtype (default float32; added values are cast, e.g. bool flags become 0./1.).
    """

    def __init__(
        self,
        capacity: int,
        specs: dict[str, tuple[int, ...]],
        device: torch.device | str = "cpu",
        dtypes: dict[str, torch.dtype] | None = None,
    ) -> None:
        if capacity < 1:
            raise ValueError(f"ReplayBuffer: capacity must be >= 1, got {capacity}")
        dtypes = dtypes or {}
        unknown = sorted(set(dtypes) - set(specs))
        if unknown:
            raise ValueError(f"ReplayBuffer: dtypes given for keys {unknown} that are not in specs")
        self.capacity = capacity
        self.specs = {k: tuple(int(d) for d in v) for k, v in specs.items()}
        self.device = torch.device(device)
        self.data = {
            k: torch.zeros(
                (capacity, *shape), dtype=dtypes.get(k, torch.float32), device=self.device
            )
            for k, shape in self.specs.items()
        }
        self.pos = 0  # next row to write
        self.size = 0  # rows filled

    def __len__(self) -> int:
        return self.size

    def add(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Append ``batch`` (each value (B, *spec), the same B for all keys), overwriting the
        oldest entries once full. B may be 0; only the last ``capacity`` rows of a larger B
        are kept. Returns the rows written, (B,) long, -1 for rows of a larger B not kept.
        """
        if set(batch) != set(self.specs):
            missing, extra = (
                sorted(set(self.specs) - set(batch)),
                sorted(set(batch) - set(self.specs)),
            )
            raise ValueError(
                f"ReplayBuffer.add: batch keys do not match the specs (missing {missing}, "
                f"unexpected {extra}); expected exactly {sorted(self.specs)}"
            )
        sizes = set()
        for k, v in batch.items():
            want = self.specs[k]
            if v.dim() < 1 or tuple(v.shape[1:]) != want:
                expected = "(B, " + ", ".join(map(str, want)) + ")" if want else "(B,)"
                raise ValueError(
                    f"ReplayBuffer.add: key {k!r} has shape {tuple(v.shape)}, expected "
                    f"{expected} (spec {want} per entry, after the batch dim B)"
                )
            sizes.add(v.shape[0])
        if len(sizes) > 1:
            shapes = {k: tuple(v.shape) for k, v in batch.items()}
            raise ValueError(f"ReplayBuffer.add: keys have different batch sizes: {shapes}")
        b = sizes.pop()
        rows = torch.full((b,), -1, dtype=torch.long, device=self.device)
        if b == 0:
            return rows
        keep = min(b, self.capacity)
        start = self.pos + b - keep  # the rows of a batch larger than capacity that survive
        idx = (start + torch.arange(keep, device=self.device)) % self.capacity
        for k, v in batch.items():
            self.data[k][idx] = v[b - keep :].to(self.device, self.data[k].dtype)
        self.pos = (self.pos + b) % self.capacity
        self.size = min(self.size + b, self.capacity)
        rows[b - keep :] = idx
        return rows

    def sample(
        self, batch_size: int, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """``batch_size`` entries drawn uniformly with replacement from the filled ones; each
        value (batch_size, *spec). The indices are drawn on ``generator``'s device.
        """
        if self.size == 0:
            raise RuntimeError("ReplayBuffer.sample: the buffer is empty; add transitions first")
        gen_device = generator.device if generator is not None else torch.device("cpu")
        idx = torch.randint(self.size, (batch_size,), generator=generator, device=gen_device)
        idx = idx.to(self.device)
        return {k: v[idx] for k, v in self.data.items()}

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly: filled rows, write position, size, specs."""
        return {
            "capacity": self.capacity,
            "specs": dict(self.specs),
            "pos": self.pos,
            "size": self.size,
            "data": {k: v[: self.size].clone() for k, v in self.data.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a ``state_dict`` taken from a buffer with the same capacity and specs."""
        specs = {k: tuple(v) for k, v in state["specs"].items()}
        if state["capacity"] != self.capacity or specs != self.specs:
            raise ValueError(
                f"ReplayBuffer.load_state_dict: saved buffer has capacity {state['capacity']} "
                f"and specs {specs}, this one {self.capacity} and {self.specs}"
            )
        size = int(state["size"])
        for k, v in self.data.items():
            v[:size] = state["data"][k].to(self.device, v.dtype)
            v[size:] = 0
        self.pos, self.size = int(state["pos"]), size

    def to(self, device: torch.device | str) -> ReplayBuffer:
        """This buffer if it is on ``device`` already, else a copy there (same capacity,
        specs, dtypes, rows and write position)."""
        if torch.device(device) == self.device:
            return self
        dtypes = {k: v.dtype for k, v in self.data.items()}
        moved = ReplayBuffer(self.capacity, self.specs, device, dtypes)
        moved.load_state_dict(self.state_dict())
        return moved
