"""Who is asking, and in which tenancy: the context every use case receives."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from ecliptic.errors import Forbidden
from ecliptic.store.models import Membership, User


@dataclass(frozen=True)
class Caller:
    """An authenticated user acting in (at most) one tenancy."""

    user_id: str
    """The user's id."""
    user_name: str
    """The user's name."""
    is_admin: bool
    """Cloud administrator: may manage hosts, flavors, tenancies and users."""
    tenancy_id: str | None = None
    """Tenancy the request acts in; None for requests that need none."""
    tenancy_name: str | None = None
    """That tenancy's name."""
    role: str | None = None
    """The user's role in that tenancy: ``member`` or ``admin``."""
    memberships: int | None = None
    """How many tenancies the user belongs to (capped at 2), when known."""

    def require_admin(self, what: str) -> None:
        """Refuse unless the caller is a cloud administrator."""
        if not self.is_admin:
            raise Forbidden(f"only administrators may {what}")

    def require_tenancy(self) -> str:
        """The tenancy id; refuse when the request named none."""
        if self.tenancy_id is None and self.memberships == 0 and not self.is_admin:
            raise Forbidden(
                f"you ({self.user_name}) are not a member of any tenancy yet: ask an "
                "administrator to add you (ecliptic tenancy member-add TENANCY "
                f"{self.user_name})"
            )
        if self.tenancy_id is None:
            raise Forbidden(
                "this request acts inside a tenancy: pass one with the X-Ecliptic-Tenancy "
                "header (or --tenancy), or use a token scoped to one"
            )
        return self.tenancy_id


def acting_for(session: Session, tenancy_id: str, user_id: str | None, what: str) -> Caller:
    """The user who made ``what`` (a platform, a benchmark run), acting in its tenancy:
    what a worker makes for it later is theirs too."""
    user = session.get(User, user_id) if user_id else None
    role = session.scalar(
        select(Membership.role).where(
            Membership.tenancy_id == tenancy_id, Membership.user_id == user_id
        )
    )
    return Caller(
        user_id=user_id or "",
        user_name=user.name if user else what,
        is_admin=False,
        tenancy_id=tenancy_id,
        role=role,
    )
