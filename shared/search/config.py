"""Search parameters (CONTRACT section 7)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class EntryGate(BaseModel):
    """How a checkpoint enters trades when served: chosen on the validation split by the trainer and
    kept in the checkpoint's manifest (``serving.entry_gate``)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    margin: float = Field(0.0, ge=0.0)  # Q(entry) - Q(HOLD) needed to enter, in reward units
    allow_entries: bool = True  # False: validation showed no edge, the agent holds

    @classmethod
    def from_manifest(cls, serving: dict[str, object]) -> EntryGate | None:
        raw = serving.get("entry_gate")
        return cls.model_validate(raw) if isinstance(raw, dict) else None


class SearchConfig(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    num_simulations: int = Field(25, ge=1)  # 25 when serving, 10 when collecting
    pb_c_init: float = 1.25  # c1
    pb_c_base: float = 19652.0  # c2
    depth_limit: int = Field(3, ge=1)  # decision levels below the root; the value head bootstraps there
    discount: float = 0.997
    dirichlet_alpha: float = 1.0
    dirichlet_fraction: float = 0.5
    add_noise: bool = False  # root Dirichlet noise: training only
    temperature: float = 0.0  # visit-count temperature; 0 picks the most visited action
    # Share of the roots holding a position that get the noise and the temperature (the seed
    # recipe: all, 1.0); the others act greedily. Flat roots always explore. Below 1, a held
    # position is managed by the policy being learned, with an exploratory decision every 1 / share
    # bars instead of every bar (docs/results/TRAINING_NOTES.md, session 4).
    explore_in_position: float = Field(1.0, ge=0.0, le=1.0)
    # The entry gate (no-edge discipline): a greedy BUY or SELL is taken only when its searched Q beats
    # HOLD's by ``entry_margin`` (reward units); otherwise the root holds. None: no gate.
    # ``allow_entries=False`` never enters (validation showed no edge at any margin). Serving reads
    # both from the checkpoint's manifest (``EntryGate``); training never gates.
    entry_margin: float | None = None
    allow_entries: bool = True

    def gated(self, gate: EntryGate | None) -> SearchConfig:
        """This config with ``gate`` applied (None leaves it ungated)."""
        if gate is None:
            return self
        return self.model_copy(update={"entry_margin": gate.margin, "allow_entries": gate.allow_entries})

    @classmethod
    def serving(cls) -> SearchConfig:
        return cls(num_simulations=25, add_noise=False, temperature=0.0)

    @classmethod
    def collecting(cls, temperature: float) -> SearchConfig:
        return cls(num_simulations=10, add_noise=True, temperature=temperature)
