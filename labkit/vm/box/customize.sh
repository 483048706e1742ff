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
# no DNS reverse lookups on login: they stall when the guest has no resolver yet. One host
# key, Ed25519: made in a blink where RSA takes seconds under emulation, and every client here
# speaks it (OpenSSH, Paramiko, Vagrant's net-ssh with ruby-ed25519)
cat > "$R/etc/ssh/sshd_config.d/labkit.conf" <<'SSHD'
UseDNS no
HostKey /etc/ssh/ssh_host_ed25519_key
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

# sshd as the box's own unit (Debian's, with two changes): its host key is made on first boot,
# never baked into the box, so each VM has its own; and it starts as soon as the file systems
# and /run are set up, not after the network and resolver (sshd listens on every address as
# they come) while the rest of the boot goes on
rm -f "$R"/etc/ssh/ssh_host_*
cat > "$R/etc/systemd/system/ssh.service" <<'UNIT'
[Unit]
Description=OpenBSD Secure Shell server (labkit box: starts early, host key made on first boot)
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
