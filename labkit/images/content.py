"""The content cache's lab images on this machine's Docker: read, commit, remove.

A lab image is a builder container (a lab host converged with the lab's content) committed
with labels saying what made it (``labkit.plan.contentcache``: lab, content key, base image
id, distro). The decisions are in ``labkit.plan.contentcache``; this module only talks to Docker.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping

from labkit.engines import docker as engine
from labkit.errors import ImageError, LabkitError
from labkit.plan.contentcache import LABEL_BASE, LABEL_DISTRO, LABEL_KEY, LABEL_LAB, REPO


def image_id(ref: str) -> str | None:
    """The id a reference names now (None: no such image)."""
    try:
        return str(engine.client().api.inspect_image(ref)["Id"])
    except Exception:  # noqa: BLE001 - docker.errors.ImageNotFound and friends: missing
        return None


def lab_images(lab: str) -> dict[str, str | None]:
    """The lab's lab images: reference -> the base image id it was made from."""
    out: dict[str, str | None] = {}
    for img in engine.client().api.images(filters={"label": f"{LABEL_LAB}={lab}"}):
        labels = img.get("Labels") or {}
        for tag in img.get("RepoTags") or []:
            if tag.startswith(f"{REPO}:{lab}-"):
                out[tag] = labels.get(LABEL_BASE)
    return out


def commit(container: str, ref: str, lab: str, key: str, base_id: str, distro: str) -> str:
    """Commit a converged builder container as the lab image ``ref``; its id."""
    repo, _, tag = ref.rpartition(":")
    labels = {LABEL_LAB: lab, LABEL_KEY: key, LABEL_BASE: base_id, LABEL_DISTRO: distro}
    changes = ["LABEL " + " ".join(f'{k}="{v}"' for k, v in labels.items())]
    try:
        c = engine.client().containers.get(container)
        img = c.commit(repository=repo, tag=tag, changes=changes, pause=True)
    except Exception as e:  # noqa: BLE001 - docker.errors.*: said with the container's name
        raise ImageError(f"content cache: cannot commit {container} as {ref}: {getattr(e, 'explanation', None) or e}",
                         "run `labkit up --no-content-cache` to converge every host from its base image") from None
    return str(img.id)


def remove(lab: str, keep: Iterable[str] = ()) -> list[str]:
    """Remove the lab's lab images (but ``keep``); an image a container still uses stays. The
    references removed."""
    try:
        client = engine.client()
    except LabkitError:  # no Docker here (a Podman or LXC lab): no lab images either
        return []
    kept = set(keep)
    gone = []
    for ref in lab_images(lab):
        if ref in kept:
            continue
        try:
            client.api.remove_image(ref)
            gone.append(ref)
        except Exception:  # noqa: BLE001 - in use by a container (conflict): kept, as Docker does
            continue
    return gone


def labels(ref: str) -> Mapping[str, str]:
    """A lab image's labels ({} when it does not exist)."""
    try:
        return dict(engine.client().api.inspect_image(ref)["Config"].get("Labels") or {})
    except Exception:  # noqa: BLE001 - missing
        return {}
