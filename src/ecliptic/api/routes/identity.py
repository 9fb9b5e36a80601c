"""Tenancies, users and memberships."""

from __future__ import annotations

from fastapi import APIRouter, Response

from ecliptic.api.deps import AdminDep, CallerDep, RuntimeDep
from ecliptic.api.paging import NameFilter, PagingDep, matches, paged
from ecliptic.api.schemas import (
    MembershipOut,
    MembershipSet,
    Page,
    TenancyCreate,
    TenancyOut,
    UserCreate,
    UserOut,
    UserUpdate,
)
from ecliptic.services import identity

router = APIRouter(tags=["identity"])


@router.get("/tenancies", response_model=Page[TenancyOut])
def list_tenancies(
    caller: CallerDep, rt: RuntimeDep, page: PagingDep, name: NameFilter = None
) -> Page[TenancyOut]:
    """Tenancies you belong to (all of them, for administrators)."""
    rows = [t for t in identity.list_tenancies(rt.db, caller) if matches(t.name, name)]
    return paged(rows, page, lambda t: t.id, TenancyOut.model_validate)


@router.post("/tenancies", response_model=TenancyOut, status_code=201)
def create_tenancy(body: TenancyCreate, caller: CallerDep, rt: RuntimeDep) -> TenancyOut:
    """Create a tenancy (administrators)."""
    return TenancyOut.model_validate(
        identity.create_tenancy(rt.db, caller, body.name, body.description)
    )


@router.delete("/tenancies/{ref}", status_code=204)
def delete_tenancy(ref: str, caller: CallerDep, rt: RuntimeDep) -> Response:
    """Delete an empty tenancy (administrators)."""
    identity.delete_tenancy(rt.db, caller, ref)
    return Response(status_code=204)


@router.get("/tenancies/{ref}/members", response_model=Page[MembershipOut])
def list_members(
    ref: str, caller: CallerDep, rt: RuntimeDep, page: PagingDep
) -> Page[MembershipOut]:
    """Members of a tenancy."""
    return paged(
        identity.list_members(rt.db, caller, ref),
        page,
        lambda m: m.user.name,
        lambda m: MembershipOut(tenancy=m.tenancy.name, user=m.user.name, role=m.role),
    )


@router.put("/tenancies/{ref}/members", response_model=MembershipOut)
def set_member(ref: str, body: MembershipSet, caller: CallerDep, rt: RuntimeDep) -> MembershipOut:
    """Add a user to a tenancy or change their role (administrators, tenancy admins)."""
    m = identity.set_membership(rt.db, caller, ref, body.user, body.role)
    return MembershipOut(tenancy=m.tenancy.name, user=m.user.name, role=m.role)


@router.delete("/tenancies/{ref}/members/{user}", status_code=204)
def remove_member(ref: str, user: str, caller: CallerDep, rt: RuntimeDep) -> Response:
    """Remove a user from a tenancy."""
    identity.remove_membership(rt.db, caller, ref, user)
    return Response(status_code=204)


@router.get("/users", response_model=Page[UserOut])
def list_users(
    caller: CallerDep, rt: RuntimeDep, page: PagingDep, name: NameFilter = None
) -> Page[UserOut]:
    """Every user (administrators)."""
    rows = [u for u in identity.list_users(rt.db, caller) if matches(u.name, name)]
    return paged(rows, page, lambda u: u.id, UserOut.model_validate)


@router.post("/users", response_model=UserOut, status_code=201)
def create_user(body: UserCreate, caller: CallerDep, rt: RuntimeDep) -> UserOut:
    """Create a user (administrators)."""
    return UserOut.model_validate(
        identity.create_user(
            rt.db, caller, body.name, body.password, email=body.email, is_admin=body.is_admin
        )
    )


@router.patch("/users/{ref}", response_model=UserOut)
def update_user(ref: str, body: UserUpdate, caller: AdminDep, rt: RuntimeDep) -> UserOut:
    """Disable or enable a user (administrators); disabling ends their sessions at once."""
    return UserOut.model_validate(identity.set_user_disabled(rt.db, caller, ref, body.disabled))


@router.delete("/users/{ref}", status_code=204, response_class=Response)
def delete_user(ref: str, caller: AdminDep, rt: RuntimeDep) -> Response:
    """Remove a user (administrators); their sessions end at once."""
    identity.delete_user(rt.db, caller, ref)
    return Response(status_code=204)
