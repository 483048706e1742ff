"""Shared, session-scoped labs on the real engines: the default lab (containers + VM) is
brought up once per run, and every integration test reads it."""
import os

from tests.labs import (  # noqa: F401 - the helpers the tests import from here
    PROBE,
    bundle_digest,
    content_parents,
    docker,
    loopback_server,
    nc_outcome,
    podman,
    podman_user,
    recap,
    run,
    ssh_masters,
    virsh,
    vm_as_lab_server,
    vm_who_listener,
    wait_port,
    write_inventory,
)

# The session's shared lab is the default one: commands without -f act on it, whatever other
# lab a test has up at the time (lab selection itself is tested in test_22_cli with this unset).
os.environ.setdefault("LABKIT_LAB", "demo")
