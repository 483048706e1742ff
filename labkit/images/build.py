"""Base images: built offline from Debian's mirror and busybox-static, or pulled; and the
images with a lab's packages baked in.

Debian images: ``mmdebstrap --variant=minbase`` with python3 (Ansible modules)
and procps/iproute2 (the checks), then ``docker import``. BusyBox: the static
binary from Debian's busybox-static with its applet links, no Python. Every image
carries ``labkit.recipe`` (a hash of how it was made): an image whose recipe
is unchanged is not rebuilt unless forced.

Baked images (``bake``): a lab's ``provision.packages`` installed once per distro, with the
distro's own package manager, into an image derived from the base one
(``labkit/<distro slug>-pkgs:<hash>``, the hash of the base image's id, the packages and
the recipe), so forty students' containers do not each run the package manager: the
student_env role then finds the packages there and installs nothing. Only for containers
of Docker on this machine; a package that cannot be baked is installed by the role as
before, where its failure names the host.
"""
from __future__ import annotations

import errno
import fcntl
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

from labkit import procs
from labkit.engines import docker as engine
from labkit.errors import ImageError
from labkit.lab import catalog
from labkit.log import Log, quiet
from labkit.paths import state_dir

if TYPE_CHECKING:
    from docker.models.images import Image

RECIPE_VERSION = "1"
MIRROR = "http://deb.debian.org/debian"
# openssh-sftp-server: sftp and scp through the student door (`labkit serve`), as on a Debian server
DEBIAN_INCLUDE = ["python3", "python3-apt", "procps", "iproute2", "openssh-sftp-server", "sudo"]
MMDEBSTRAP_OPTS = [
    "--variant=minbase",
    "--aptopt=Acquire::Languages \"none\"",
    "--dpkgopt=path-exclude=/usr/share/doc/*",
    "--dpkgopt=path-exclude=/usr/share/man/*",
    "--dpkgopt=path-exclude=/usr/share/locale/*",
    "--dpkgopt=path-include=/usr/share/locale/locale.alias",
    # No package lists in the image, and the empty lists folder dated 1970: Ansible's apt
    # `update_cache: true` with `cache_valid_time` (what most public roles do) judges the
    # cache by that folder's age, and a freshly built image's would look fresh, so it would
    # skip the update and then find no package.
    # (mmdebstrap's own apt clean-up would date the folder now: its `apt-get clean` takes
    # the lists' lock; so the hook does the same clean-up itself)
    "--skip=cleanup/apt",
    "--customize-hook=rm -rf \"$1\"/var/lib/apt/lists/* \"$1\"/var/cache/apt/*.bin"
    " \"$1\"/var/cache/apt/archives/*.deb \"$1\"/var/cache/apt/archives/partial/*"
    " \"$1\"/var/lib/apt/periodic/update-success-stamp"
    " && mkdir -p \"$1\"/var/lib/apt/lists/partial"
    " && touch -d @0 \"$1\"/var/lib/apt/lists/partial \"$1\"/var/lib/apt/lists",
]
BUSYBOX_BIN = Path("/bin/busybox")
CMD = 'CMD ["sleep", "infinity"]'



BAKE_VERSION = "2"  # 2: the label labkit.baked.base
_BAKE_INSTALL = {  # what bakes packages into an image, per package manager ($PKGS: the packages)
    "apt": ("export DEBIAN_FRONTEND=noninteractive && apt-get update -q && apt-get install -y -q $PKGS"
            " && apt-get clean && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin"
            " && mkdir -p /var/lib/apt/lists/partial"
            " && touch -d @0 /var/lib/apt/lists/partial /var/lib/apt/lists"),  # as the base image has them
    "dnf": "dnf install -y $PKGS && dnf clean all",
    "yum": "yum install -y $PKGS && yum clean all",
    "microdnf": "microdnf install -y $PKGS && microdnf clean all",
    "apk": "apk add --no-cache $PKGS",
    "zypper": "zypper -n install $PKGS && zypper clean -a",
}


@dataclass
class ImageResult:
    ref: str
    image: str
    action: str          # built, skipped, pulled, present
    seconds: float = 0.0
    size: int = 0


def _debian_recipe(d: catalog.Distro) -> str:
    blob = json.dumps([RECIPE_VERSION, d.suite, DEBIAN_INCLUDE, MMDEBSTRAP_OPTS, MIRROR, CMD])
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _busybox_recipe() -> str:
    h = hashlib.sha256(RECIPE_VERSION.encode() + CMD.encode())
    if BUSYBOX_BIN.exists():
        h.update(BUSYBOX_BIN.read_bytes())
    return h.hexdigest()[:16]


def recipe(d: catalog.Distro) -> str:
    return _busybox_recipe() if d.family == "busybox" else _debian_recipe(d)


def _image(ref: str) -> Image | None:
    import docker  # the SDK loads when an engine is used (as labkit.engines.docker's client)

    try:
        return engine.client().images.get(ref)
    except docker.errors.ImageNotFound:
        return None


def _changes(d: catalog.Distro, rec: str) -> list[str]:
    return [
        f"LABEL labkit.image=true labkit.distro={d.ref} labkit.recipe={rec}",
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        CMD,
    ]


def _import(tar: Path, d: catalog.Distro, rec: str) -> None:
    repo, tag = d.image.rsplit(":", 1)
    out = engine.client().api.import_image_from_file(str(tar), repository=repo, tag=tag, changes=_changes(d, rec))
    if "error" in str(out).lower() and _image(d.image) is None:
        raise ImageError(f"docker import of {d.image} failed: {out}")


_RUNNING: set[subprocess.Popen] = set()


def _keep_log(logfile: Path) -> Path:
    """Copy a failed build's log out of its work folder (which is removed) and return where."""
    kept = state_dir() / "logs" / logfile.name
    try:
        kept.parent.mkdir(exist_ok=True)
        shutil.copyfile(logfile, kept)
        return kept
    except OSError:  # the disk is full: the tail in the message is all there is
        return logfile


def _disk_full(what: str, where: Path, more: str = "") -> ImageError:
    free = shutil.disk_usage(where).free // 2**20
    return ImageError(f"{what} failed: no space left on the disk that holds {where} ({free} MiB free)",
                      "free some space there, or point LABKIT_HOME at a disk with room (a Debian image build "
                      "needs about 400 MiB while it runs)" + more)


def _run(cmd: list[str], what: str, logfile: Path) -> None:
    # mmdebstrap's own temp files go into the build's work folder, removed whatever happens
    env = dict(os.environ, TMPDIR=str(logfile.parent))
    with logfile.open("wb") as f:
        # a group of its own: an interrupt stops mmdebstrap with its apt and dpkg (labkit.procs)
        p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        _RUNNING.add(p)
        try:
            p.wait()
        finally:
            _RUNNING.discard(p)
    if p.returncode != 0:
        text = logfile.read_text(errors="replace")
        where = logfile.parent.parent  # the builds' temp folder
        logfile = _keep_log(logfile)
        if "No space left on device" in text:
            raise _disk_full(what, where, f"; full log: {logfile}")
        tail = text.strip().splitlines()[-5:]
        raise ImageError(
            f"{what} failed (exit {p.returncode}):\n    " + "\n    ".join(tail),
            f"full log: {logfile}; check the Debian mirror ({MIRROR}) is reachable and there is free disk "
            "(`df -h /var/lib/docker /tmp`)",
        )


def _build_debian(d: catalog.Distro, rec: str, work: Path) -> None:
    if shutil.which("mmdebstrap") is None:
        raise ImageError("mmdebstrap is not installed", "run `bash scripts/setup.sh` or `apt-get install mmdebstrap`")
    assert d.suite, f"{d.ref} is not built from a Debian suite"
    tar = work / f"{d.slug}.tar"
    cmd = ["mmdebstrap", *MMDEBSTRAP_OPTS, "--include=" + ",".join(DEBIAN_INCLUDE), d.suite, str(tar), MIRROR]
    _run(cmd, f"mmdebstrap {d.suite}", work / f"{d.slug}.log")
    _import(tar, d, rec)


def _busybox_tar(path: Path) -> None:
    if not BUSYBOX_BIN.exists():
        raise ImageError(f"{BUSYBOX_BIN} not found", "run `bash scripts/setup.sh` or `apt-get install busybox-static`")
    applets = subprocess.run([str(BUSYBOX_BIN), "--list-full"], capture_output=True, text=True, check=True)
    now = int(time.time())
    with tarfile.open(path, "w") as t:
        def add_dir(name: str, mode: int = 0o755) -> None:
            ti = tarfile.TarInfo(name)
            ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, mode, now
            t.addfile(ti)

        def add_file(name: str, data: bytes, mode: int = 0o644) -> None:
            ti = tarfile.TarInfo(name)
            ti.size, ti.mode, ti.mtime = len(data), mode, now
            t.addfile(ti, io.BytesIO(data))

        for d in ["bin", "sbin", "usr", "usr/bin", "usr/sbin", "etc", "root", "home", "var", "proc", "sys", "dev"]:
            add_dir(d, 0o700 if d == "root" else 0o755)
        add_dir("tmp", 0o1777)
        t.add(str(BUSYBOX_BIN), "bin/busybox")
        for applet in applets.stdout.split():
            if applet == "bin/busybox":
                continue
            ti = tarfile.TarInfo(applet)
            ti.type, ti.linkname, ti.mtime = tarfile.SYMTYPE, "/bin/busybox", now
            t.addfile(ti)
        add_file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n")
        add_file("etc/group", b"root:x:0:\nnogroup:x:65534:\n")
        add_file("etc/shadow", b"root:*:19000:0:99999:7:::\n", 0o600)


def _build_busybox(d: catalog.Distro, rec: str, work: Path) -> None:
    tar = work / "busybox.tar"
    _busybox_tar(tar)
    _import(tar, d, rec)


def status(d: catalog.Distro, registry: str | None = None) -> str:
    """``built``, ``stale`` (recipe changed), ``missing``, ``present`` (registry image here) or ``absent``."""
    if d.source == "registry":
        return "present" if _image(d.image_ref(registry)) is not None else "absent"
    img = _image(d.image)
    if img is None:
        return "missing"
    return "built" if (img.labels or {}).get("labkit.recipe") == recipe(d) else "stale"


def build(refs: Iterable[str], force: bool = False, log: Log = quiet, jobs: int = 3) -> list[ImageResult]:
    """Build the local images of ``refs``; unchanged ones are skipped unless ``force``."""
    distros = []
    for r in refs:
        d = catalog.get(r)
        if d.source != "local":
            raise ImageError(f"{d.ref} is a registry image ({d.image}); labkit cannot build it offline",
                             f"pull it with `labkit images pull {d.ref}` in a connected classroom")
        if d not in distros:
            distros.append(d)
    engine.client()
    results: list[ImageResult] = []
    todo = []
    for d in distros:
        if not force and status(d) == "built":
            log(f"{d.image}: up to date (recipe {recipe(d)}), skipped")
            results.append(ImageResult(d.ref, d.image, "skipped"))
        else:
            todo.append(d)
    if not todo:
        return results
    tmp_root = state_dir() / "tmp"
    tmp_root.mkdir(exist_ok=True)

    def one(d: catalog.Distro) -> ImageResult:
        t0 = time.monotonic()
        log(f"{d.image}: building ({'busybox-static' if d.family == 'busybox' else 'mmdebstrap ' + str(d.suite)})")
        work = Path(tempfile.mkdtemp(prefix=f"image-{d.slug}-", dir=tmp_root))
        try:
            rec = recipe(d)
            (_build_busybox if d.family == "busybox" else _build_debian)(d, rec, work)
        except OSError as e:
            if e.errno != errno.ENOSPC:
                raise
            raise _disk_full(f"building {d.image}", tmp_root) from None
        finally:
            shutil.rmtree(work, ignore_errors=True)
        img = _image(d.image)
        size = img.attrs.get("Size", 0) if img else 0
        secs = time.monotonic() - t0
        log(f"{d.image}: built in {secs:.0f}s ({size / 1e6:.0f} MB)")
        return ImageResult(d.ref, d.image, "built", secs, size)

    errors = []
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as ex:
        futs = [ex.submit(one, d) for d in todo]
        try:
            for f in futs:
                try:
                    results.append(f.result())
                except ImageError as e:
                    errors.append(e)
        except KeyboardInterrupt:  # Ctrl-C / SIGTERM: stop the builds; each removes its work folder
            for f in futs:
                f.cancel()
            procs.stop_groups(list(_RUNNING))
            for f in futs:
                try:
                    f.result(timeout=60)
                except BaseException:  # noqa: BLE001 - we are stopping anyway
                    pass
            raise
    if errors:
        raise ImageError("\n".join(e.message for e in errors), errors[0].hint)
    return results


def pull(refs: Iterable[str], registry: str | None = None, log: Log = quiet) -> list[ImageResult]:
    """Pull registry-backed distros (through ``registry`` when given)."""
    import docker

    out = []
    for r in refs:
        d = catalog.get(r)
        if d.source != "registry":
            raise ImageError(f"{d.ref} is built locally, not pulled", f"run `labkit images build {d.ref}`")
        ref = d.image_ref(registry)
        t0 = time.monotonic()
        log(f"{ref}: pulling")
        try:
            engine.client().images.pull(ref)
        except docker.errors.DockerException as e:
            msg = getattr(e, "explanation", None) or str(e)
            raise ImageError(f"pull of {ref} for {d.ref} failed: {msg}",
                             "check the registry is reachable (`docker pull " + ref + "`), or set a mirror "
                             "with `registry:` in the lab file / $LABKIT_REGISTRY") from None
        out.append(ImageResult(d.ref, ref, "pulled", time.monotonic() - t0))
    return out


def ensure(refs: Iterable[str], registry: str | None = None, build_missing: bool = False,
           log: Log = quiet) -> list[ImageResult]:
    """Make sure every image of ``refs`` is here, never hanging on a registry for a local image.

    A missing local image is built when ``build_missing``, else an ImageError says how to
    build it. A missing registry image is pulled.
    """
    missing_local, missing_remote, res = [], [], []
    for r in refs:
        d = catalog.get(r)
        st = status(d, registry)
        if st in ("built", "present", "stale"):
            if st == "stale":
                log(f"{d.image}: recipe changed; rebuild with `labkit images build --force {d.ref}`")
            res.append(ImageResult(d.ref, d.image_ref(registry), "present"))
        elif d.source == "local":
            missing_local.append(d.ref)
        else:
            missing_remote.append(d.ref)
    if missing_local:
        if not build_missing:
            raise ImageError(
                "image(s) not built on this machine: "
                + ", ".join(f"{catalog.get(r).image} ({r})" for r in missing_local),
                f"build them with `labkit images build {' '.join(missing_local)}` or run `labkit up --build`",
            )
        res += build(missing_local, log=log)
    if missing_remote:
        res += pull(missing_remote, registry, log)
    return res


def _bakeable(d: catalog.Distro, packages: Iterable[str]) -> bool:
    return bool(list(packages)) and d.pkg_mgr in _BAKE_INSTALL


# init: systemd (labkit.lab.spec): the distro's image with systemd as PID 1, baked like the
# packages (with the lab's packages too), booted with what systemd expects of a container
SYSTEMD_PACKAGES = ("systemd", "systemd-sysv", "dbus")
SYSTEMD_CHANGES = ('CMD ["/lib/systemd/systemd"]',)  # its stop signal and $container: the engine's
# units a container cannot run without privileges: Debian 13's tmpfs /tmp (a mount needs CAP_SYS_ADMIN)
SYSTEMD_SETUP = "systemctl mask tmp.mount"


def baked_tag(d: catalog.Distro, packages: Iterable[str], base_id: str | None, variant: str = "pkgs") -> str:
    """The derived image of ``d`` with ``packages`` (``variant`` systemd: systemd as PID 1):
    named by a hash of what makes it."""
    key = [BAKE_VERSION, base_id, sorted(set(packages)), _BAKE_INSTALL[d.pkg_mgr], d.bootstrap or ""]
    if variant != "pkgs":
        key += [variant, list(SYSTEMD_CHANGES), SYSTEMD_SETUP]
    prefix = os.environ.get("LABKIT_IMAGE_PREFIX", "labkit/")
    return f"{prefix}{d.slug}-{variant}:{hashlib.sha256(json.dumps(key).encode()).hexdigest()[:12]}"


def _variant_packages(packages: Iterable[str], variant: str) -> list[str]:
    return sorted(set(packages) | (set(SYSTEMD_PACKAGES) if variant == "systemd" else set()))


def baked(refs: Iterable[str], packages: Iterable[str], registry: str | None = None,
          variant: str = "pkgs") -> dict[str, str]:
    """Read only: per distro of ``refs``, its baked image with ``packages`` (of ``variant``)
    when it is here."""
    pkgs = _variant_packages(packages, variant)
    out = {}
    for r in dict.fromkeys(refs):
        d = catalog.get(r)
        if not _bakeable(d, pkgs):
            continue
        base = _image(d.image_ref(registry))
        if base is None:
            continue
        tag = baked_tag(d, pkgs, base.id, variant)
        if _image(tag) is not None:
            out[d.ref] = tag
    return out


def systemd_images(refs: Iterable[str], packages: Iterable[str], registry: str | None = None,
                   log: Log = quiet) -> dict[str, str]:
    """The image of each distro of ``refs`` with systemd as PID 1 (and ``packages``), made
    when missing; a distro that cannot have one is an ImageError naming why."""
    refs = list(dict.fromkeys(refs))
    made = bake(refs, packages, registry, log, variant="systemd")
    missing = [r for r in refs if catalog.get(r).ref not in made]
    if missing:
        raise ImageError(f"no systemd image for {', '.join(missing)} (init: systemd): its bake failed or its base "
                         "image is not here", "see the lines above; `labkit images build` makes the base images")
    return made


def bake(refs: Iterable[str], packages: Iterable[str], registry: str | None = None, log: Log = quiet,
         jobs: int = 3, variant: str = "pkgs") -> dict[str, str]:
    """Bake ``packages`` into an image per distro of ``refs`` (the missing ones, in parallel):
    a container of the base image runs the distro's package manager, then is committed.
    Returns the baked images by distro; a distro whose bake failed is left out (said in the
    log): its hosts install the packages themselves, as without baking. ``variant`` systemd:
    systemd's packages too, and systemd as the image's command (init: systemd)."""
    pkgs = _variant_packages(packages, variant)
    have = baked(refs, pkgs, registry, variant)
    todo = [catalog.get(r) for r in dict.fromkeys(refs)
            if _bakeable(catalog.get(r), pkgs) and catalog.get(r).ref not in have
            and _image(catalog.get(r).image_ref(registry)) is not None]
    if not todo:
        return have

    def one(d: catalog.Distro) -> tuple[str, str | None]:
        base = cast("Image", _image(d.image_ref(registry)))  # todo: distros whose base image is here
        tag = baked_tag(d, pkgs, base.id, variant)
        # one bake of a tag at a time on this machine (two labs' `up` at once): the second
        # finds it made
        locks = state_dir() / "tmp"
        locks.mkdir(parents=True, exist_ok=True)
        with open(locks / f"bake-{tag.replace('/', '_').replace(':', '_')}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if _image(tag) is not None:
                return d.ref, tag
            return _bake_one(d, base, tag)

    def _bake_one(d: catalog.Distro, base: Image, tag: str) -> tuple[str, str | None]:
        import docker

        t0 = time.monotonic()
        log(f"{tag}: baking {' '.join(pkgs)} into {d.image_ref(registry)}")
        script = _BAKE_INSTALL[d.pkg_mgr].replace("$PKGS", " ".join(pkgs))
        if variant == "systemd":
            script += f" && {SYSTEMD_SETUP}"
        if d.bootstrap:
            script = f"{{ command -v python3 >/dev/null 2>&1 || {{ {d.bootstrap}; }}; }} && {script}"
        c = engine.client().containers.create(base.id or base, ["sh", "-c", script], labels={"labkit.bake": tag},
                                              network_mode="bridge")
        try:
            c.start()
            rc = c.wait(timeout=1800).get("StatusCode", 1)
            if rc != 0:
                tail = c.logs().decode(errors="replace").strip().splitlines()[-5:]
                log(f"{tag}: not baked ({d.ref}: exit {rc}: {' / '.join(tail)}); its hosts install "
                    f"{' '.join(pkgs)} themselves")
                return d.ref, None
            cfg = base.attrs.get("Config") or {}
            changes = [f"CMD {json.dumps(cfg.get('Cmd') or ['sleep', 'infinity'])}",
                       f"LABEL labkit.baked.from={d.ref} labkit.baked.base={base.id}"
                       f" labkit.baked.packages=\"{' '.join(pkgs)}\""]
            if variant == "systemd":
                changes = [*SYSTEMD_CHANGES, changes[1]]
            repo, _, t = tag.rpartition(":")
            c.commit(repository=repo, tag=t, changes=changes)
        except docker.errors.DockerException as e:
            log(f"{tag}: not baked ({d.ref}: {getattr(e, 'explanation', None) or e}); its hosts install "
                f"{' '.join(pkgs)} themselves")
            return d.ref, None
        finally:
            try:
                c.remove(force=True)
            except docker.errors.DockerException:
                pass
        log(f"{tag}: baked in {time.monotonic() - t0:.0f}s")
        return d.ref, tag

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as ex:
        for ref, tag in ex.map(one, todo):
            if tag:
                have[ref] = tag
    return have


def list_images() -> list[dict]:
    """Every catalogue entry with its local state, plus any other labkit image present."""
    rows = []
    for ref in catalog.names():
        d = catalog.get(ref)
        img = _image(d.image)
        rows.append({
            "distro": d.ref, "image": d.image, "source": d.source, "status": status(d),
            "size": img.attrs.get("Size", 0) if img else 0,
            "created": img.attrs.get("Created", "")[:19] if img else "",
        })
    return rows


def remove(refs: Iterable[str], log: Log = quiet) -> list[str]:
    """Remove the images of ``refs`` (only images labkit made or pulled for the catalogue)."""
    import docker

    removed = []
    for r in refs:
        d = catalog.get(r)
        ref = d.image
        try:
            engine.client().images.remove(ref)
            removed.append(ref)
            log(f"{ref}: removed")
        except docker.errors.ImageNotFound:
            log(f"{ref}: not present")
        except docker.errors.APIError as e:
            raise ImageError(f"cannot remove {ref}: {e.explanation}",
                             "a lab still uses it: run `labkit down` first") from None
    return removed
