"""Images servers boot from: ``/api/v1/images``."""

from __future__ import annotations

from dataclasses import asdict

from fastapi import APIRouter, Response

from ecliptic.api.deps import CallerDep, RuntimeDep
from ecliptic.api.paging import NameFilter, PagingDep, matches, paged
from ecliptic.api.schemas import ImageLog, ImageOut, Page
from ecliptic.backends.base import ImageInfo
from ecliptic.services import images

router = APIRouter(tags=["images"])


def _out(info: ImageInfo) -> ImageOut:
    return ImageOut(**asdict(info))


@router.get("/images", response_model=Page[ImageOut])
def list_images(
    caller: CallerDep, rt: RuntimeDep, page: PagingDep, name: NameFilter = None
) -> Page[ImageOut]:
    """Every image, built or not, by name (``name``: only those whose name contains it).
    A server's first boot builds its image if needed."""
    rows = [i for i in images.list_images(rt.backend, rt.image_builds) if matches(i.name, name)]
    return paged(rows, page, lambda i: i.name, _out)


@router.get("/images/{name}", response_model=ImageOut)
def get_image(name: str, caller: CallerDep, rt: RuntimeDep) -> ImageOut:
    """One image."""
    return _out(images.get_image(rt.backend, rt.image_builds, name))


@router.post("/images/{name}/build", response_model=ImageOut, status_code=202)
def build_image(name: str, caller: CallerDep, rt: RuntimeDep, response: Response) -> ImageOut:
    """Build an image in the background (administrators); follow ``/images/{name}/log``.
    An image that is up to date answers 200 at once."""
    info = images.build_image(rt.backend, rt.image_builds, caller, name)
    if info.status == "built":
        response.status_code = 200
    return _out(info)


@router.get("/images/{name}/log", response_model=ImageLog)
def image_log(name: str, caller: CallerDep, rt: RuntimeDep) -> ImageLog:
    """The log of the image's build in progress, its last failed build, or its build."""
    images.get_image(rt.backend, rt.image_builds, name)
    text = rt.backend.image_log(name)
    error = rt.image_builds.last_error.get(name)
    if error and error not in text:
        text += f"\n{error}\n"
    return ImageLog(name=name, log=text)


@router.delete("/images/{name}", status_code=204)
def delete_image(name: str, caller: CallerDep, rt: RuntimeDep) -> Response:
    """Remove an image's built layers (administrators); 409 while servers use it."""
    images.delete_image(rt.db, rt.backend, rt.image_builds, caller, name)
    return Response(status_code=204)
