"""Arms: what a request is served with, and the one swappable reference to the current set.

A request reads `ArmTable.current` once, at its start, and finishes on that router even if a
swap (new bundle, new experiment) lands meanwhile: swapping is one attribute assignment, atomic
under the event loop, and the old bundle stays alive until its last request lets go of it.
Without an experiment file there is one implicit arm, "default", serving DUET_BUNDLE.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Protocol

from service.catalog.bundle import Bundle
from service.catalog.retriever import DEFAULT_SEARCH, SearchSettings
from service.pages import PageMemo
from service.policies import SCORE, RankingPolicy

if TYPE_CHECKING:
    from service.recommender import ScoredItem

DEFAULT_ARM = "default"


@dataclass(frozen=True, slots=True)
class Arm:
    name: str
    bundle: Bundle
    search: SearchSettings = DEFAULT_SEARCH
    policy: RankingPolicy = SCORE
    pages: PageMemo[list[ScoredItem]] = field(
        default_factory=PageMemo, compare=False, repr=False
    )  # the last plain page per (user, k): see service/pages.py
    related: PageMemo[tuple[list[ScoredItem], str | None]] = field(
        default_factory=PageMemo, compare=False, repr=False
    )  # item-to-item pages (similar, complementary) per (items, k), the same for every user


class ArmRouter(Protocol):
    """Chooses the arm of a user; the experiments module provides the weighted one."""

    @property
    def arms(self) -> Mapping[str, Arm]: ...

    @property
    def default(self) -> Arm: ...

    def choose(self, user_id: str, override: str | None = None) -> Arm:
        """The user's arm; `override` (the X-Duet-Arm header) only where allowed."""
        ...


class SingleArmRouter:
    """Everyone gets the same arm."""

    def __init__(self, arm: Arm) -> None:
        self._arm = arm
        self._arms = MappingProxyType({arm.name: arm})

    @property
    def arms(self) -> Mapping[str, Arm]:
        return self._arms

    @property
    def default(self) -> Arm:
        return self._arm

    def choose(self, user_id: str, override: str | None = None) -> Arm:
        return self._arm


class ArmTable:
    """Holds the current router; `None` until a verified bundle is loaded (not ready)."""

    def __init__(self, router: ArmRouter | None = None) -> None:
        self._router = router

    @property
    def current(self) -> ArmRouter | None:
        return self._router

    def swap(self, router: ArmRouter | None) -> ArmRouter | None:
        """Install `router`; returns the previous one (still serving its in-flight requests)."""
        previous, self._router = self._router, router
        return previous
