#!/bin/sh
# mmdebstrap customize hook for the labkit box: runs on the host with the root dir as $1.
# Environment: LABKIT_ROOT_UUID (the ext4 UUID), LABKIT_VAGRANT_PUBKEY (Vagrant's insecure
# public key file), LABKIT_HOSTNAME.
set -eu
R="$1"
in_root() { chroot "$R" "$@"; }

# vagrant user: passwordless sudo, Vagrant's insecure key (swapped by Vagrant on first boot).
# No password at all: the account's password is locked ('!'), and sshd takes keys only, so
# whoever reaches a VM's port 22 (a student on the lab server's network) cannot log in as
# vagrant/vagrant and sudo to root. Vagrant itself never needs a password: it logs in with
# its insecure key once and puts the VM's own key in its place.
in_root useradd -m -s /bin/bash -G sudo vagrant
in_root passwd -q -l vagrant
in_root passwd -q -l root
printf 'vagrant ALL=(ALL) NOPASSWD:ALL\nDefaults:vagrant !requiretty\n' > "$R/etc/sudoers.d/vagrant"
chmod 0440 "$R/etc/sudoers.d/vagrant"
install -d -m 0700 "$R/home/vagrant/.ssh"
install -m 0600 "$LABKIT_VAGRANT_PUBKEY" "$R/home/vagrant/.ssh/authorized_keys"
in_root chown -R vagrant:vagrant /home/vagrant/.ssh
# no DNS reverse lookups on login: they stall when the guest has no resolver yet. No HostKey
# line: sshd's defaults, as on any Debian server (RSA, ECDSA and Ed25519, whichever exist)
cat > "$R/etc/ssh/sshd_config.d/labkit.conf" <<'SSHD'
UseDNS no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
PermitEmptyPasswords no
AuthenticationMethods publickey
SSHD

# network: DHCP on the virtio NIC with systemd-networkd; client id from the MAC, so two VMs
# made from the same image never ask dnsmasq for the same lease
cat > "$R/etc/systemd/network/20-labkit-dhcp.network" <<'NET'
[Match]
Name=en* eth*

[Network]
DHCP=yes

[DHCPv4]
ClientIdentifier=mac
# the hostname is the box's: asking systemd-hostnamed to set the lease's costs seconds at boot
UseHostname=no
NET
in_root systemctl enable systemd-networkd.service systemd-resolved.service >/dev/null 2>&1
ln -sf ../run/systemd/resolve/stub-resolv.conf "$R/etc/resolv.conf"
echo "${LABKIT_HOSTNAME:-labkit-vm}" > "$R/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n' "${LABKIT_HOSTNAME:-labkit-vm}" > "$R/etc/hosts"

# sshd as the box's own unit (Debian's, with two changes): its host keys are made for each VM,
# never baked into the box, so no two VMs share one; and it starts as soon as the file systems
# and /run are set up, not after the network and resolver (sshd listens on every address as
# they come) while the rest of the boot goes on.
# A Debian 12 server has three host keys (openssh-server's `ssh-keygen -A`): RSA 3072, ECDSA
# P-256 and Ed25519. Only Ed25519 is made here before sshd starts (a blink, and every client
# speaks it: OpenSSH, Paramiko, Vagrant's net-ssh with ruby-ed25519). RSA took 4 to 18 s of
# CPU in an emulated VM here (ECDSA about 1 s, mostly starting ssh-keygen): labkit makes both on
# the lab server while the VM boots and hands them over in its first login, the VM installs
# them right after (`ssh-hostkeys --install`), and role lab_vm waits for them before anything
# else runs there; a VM nobody gave them to makes its own 5 minutes after boot
# (ssh-hostkeys.timer). sshd needs no reload for them: it reads its host keys again for every
# connection (its re-exec), and the Debian defaults name all three (no HostKey line above).
rm -f "$R"/etc/ssh/ssh_host_*
cat > "$R/etc/systemd/system/ssh.service" <<'UNIT'
[Unit]
Description=OpenBSD Secure Shell server (labkit box: starts early, host keys made for each VM)
Documentation=man:sshd(8) man:sshd_config(5)
DefaultDependencies=no
After=local-fs.target systemd-tmpfiles-setup.service
Before=shutdown.target
Conflicts=shutdown.target
ConditionPathExists=!/etc/ssh/sshd_not_to_be_run

[Service]
EnvironmentFile=-/etc/default/ssh
ExecStartPre=/bin/sh -c '[ -s /etc/ssh/ssh_host_ed25519_key ] || exec ssh-keygen -q -t ed25519 -N "" -f /etc/ssh/ssh_host_ed25519_key'
ExecStart=/usr/sbin/sshd -D $SSHD_OPTS
ExecReload=/usr/sbin/sshd -t
ExecReload=/bin/kill -HUP $MAINPID
KillMode=process
Restart=on-failure
RestartPreventExitStatus=255
Type=notify
RuntimeDirectory=sshd
RuntimeDirectoryMode=0755

[Install]
WantedBy=multi-user.target
Alias=sshd.service
UNIT

# The ECDSA and RSA host keys, each key only where the VM has none of that type yet, under one
# lock, so the first of labkit's and the VM's own keys stays and the pair is never mixed.
install -d "$R/usr/local/libexec/labkit"
cat > "$R/usr/local/libexec/labkit/ssh-hostkeys" <<'SCRIPT'
#!/bin/sh
# labkit box: the ECDSA and RSA host keys of a Debian 12 server (ssh.service makes Ed25519).
#   ssh-hostkeys            make the missing ones here (ssh-hostkeys.timer, 5 min after boot)
#   ssh-hostkeys --install  install those of the tar on stdin (labkit's first login: made on
#                           the lab server for this VM), the missing ones only
set -eu
cd /etc/ssh
exec 9>/run/lock/labkit-ssh-hostkeys
if [ "${1:-}" = --install ]; then
    flock 9
    exec tar -x --skip-old-files --no-same-owner --touch -f - \
        ssh_host_ecdsa_key.pub ssh_host_ecdsa_key ssh_host_rsa_key.pub ssh_host_rsa_key
fi
for t in ecdsa rsa; do
    k=ssh_host_${t}_key
    [ -s "$k" ] && continue
    rm -f "$k.new" "$k.new.pub"
    ssh-keygen -q -t "$t" -N "" -f "$k.new"  # RSA: 3072 bits, as `ssh-keygen -A` makes it
    flock 9
    if [ -s "$k" ]; then rm -f "$k.new" "$k.new.pub"; else mv -f "$k.new.pub" "$k.pub"; mv -f "$k.new" "$k"; fi
    flock -u 9
done
SCRIPT
chmod 0755 "$R/usr/local/libexec/labkit/ssh-hostkeys"
cat > "$R/etc/systemd/system/ssh-hostkeys.service" <<'UNIT'
[Unit]
Description=SSH host keys ECDSA and RSA of a VM labkit did not give them to (labkit box)
Documentation=man:ssh-keygen(1)
ConditionPathExists=|!/etc/ssh/ssh_host_ecdsa_key
ConditionPathExists=|!/etc/ssh/ssh_host_rsa_key

[Service]
Type=oneshot
Nice=19
CPUSchedulingPolicy=idle
IOSchedulingClass=idle
ExecStart=/usr/local/libexec/labkit/ssh-hostkeys
UNIT
cat > "$R/etc/systemd/system/ssh-hostkeys.timer" <<'UNIT'
[Unit]
Description=SSH host keys ECDSA and RSA, made in the VM when labkit gave it none (labkit box)

[Timer]
OnBootSec=5min
AccuracySec=10s

[Install]
WantedBy=timers.target
UNIT
in_root systemctl enable ssh-hostkeys.timer >/dev/null 2>&1

# a fresh machine-id per VM (first boot fills it)
: > "$R/etc/machine-id"
rm -f "$R/var/lib/dbus/machine-id"

# units that only slow an emulated boot down
for u in e2scrub_reap.service e2scrub_all.timer apt-daily.timer apt-daily-upgrade.timer \
         man-db.timer fstrim.timer dpkg-db-backup.timer logrotate.timer \
         systemd-networkd-wait-online.service systemd-timesyncd.service \
         modprobe@drm.service modprobe@efi_pstore.service modprobe@fuse.service \
         modprobe@dm_mod.service; do
    ln -sf /dev/null "$R/etc/systemd/system/$u"
done

# AppArmor's boot-time profile load holds up sysinit.target (8 s under emulation); the
# kernel's AppArmor stays on, and dockerd loads its own profile when it starts
ln -sf /dev/null "$R/etc/systemd/system/apparmor.service"

# the engine starts on first use (docker.socket), not at boot: an emulated boot stays short
in_root systemctl disable docker.service containerd.service >/dev/null 2>&1 || true
in_root systemctl enable docker.socket >/dev/null 2>&1

# a small initramfs: the modules that reach the root file system (virtio disk; ext4 is built
# in) and the network early (virtio NIC), not every storage driver: less to load from disk and
# unpack under emulation
sed -i 's/^MODULES=.*/MODULES=list/' "$R/etc/initramfs-tools/initramfs.conf"
printf 'virtio_pci\nvirtio_blk\nvirtio_net\n' >> "$R/etc/initramfs-tools/modules"
in_root update-initramfs -u -k all >/dev/null

# root file system and boot loader configuration (extlinux is installed by labkit.boxes)
printf 'UUID=%s / ext4 errors=remount-ro 0 1\n' "$LABKIT_ROOT_UUID" > "$R/etc/fstab"
kver=$(ls "$R/boot" | sed -n 's/^vmlinuz-//p' | sort -V | tail -n1)
[ -n "$kver" ] || { echo "no kernel in $R/boot" >&2; exit 1; }
install -d "$R/boot/extlinux"
cat > "$R/boot/extlinux/extlinux.conf" <<CONF
DEFAULT labkit
PROMPT 0
TIMEOUT 0
LABEL labkit
    LINUX /boot/vmlinuz-$kver
    INITRD /boot/initrd.img-$kver
    APPEND root=UUID=$LABKIT_ROOT_UUID ro quiet fsck.mode=skip console=tty0 console=ttyS0,115200n8
CONF
# leave no caches or logs of the build in the image
rm -rf "$R/var/cache/apt/"*.bin "$R/var/lib/apt/lists/"* "$R/var/log/"*.log
