"""Where labkit's LXC containers live on a lab server and how they are made: the one place
these are written. Read by the module labkit_lxc (Ansible ships this file with it), by
labkit on the controller (labkit.engines.lxc_layout) and, on a remote lab server, by
labkit's reads there (its source runs ahead of labkit/engines/lxc_server.py on stdin).

Standard library only, and plain assignments: it is run as it is by a server's Python.
"""

LXC_PATH = "/var/lib/lxc"   # the containers' folders (LXC's own default)
MARKER = "labkit.json"      # in each container's folder, first: lab, student, distro, image, ...
IDMAP_BASE = 1000000000     # root's containers' ids start here (role lab_lxc's lab_lxc_idmap_base)
IDMAP_RANGE = 65536         # ids per container: its uids/gids 0-65535
IDMAP_SLOTS = 4096          # containers per lab server, each with its own range (labkit_lxc_idmap.py)
IDMAP = f"root:{IDMAP_BASE}:{IDMAP_RANGE * IDMAP_SLOTS}"  # the line root needs in /etc/subuid and /etc/subgid
BUSYBOX = "/bin/busybox"    # the containers' init (busybox-static on the server)
