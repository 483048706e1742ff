#!/bin/sh
# mmdebstrap customize hook for the labkit box: runs on the host with the root dir as $1.
# Environment: LABKIT_ROOT_UUID (the ext4 UUID), LABKIT_VAGRANT_PUBKEY (Vagrant's insecure
# public key file), LABKIT_HOSTNAME.
set -eu
R="$1"
in_root() { chroot "$R" "$@"; }

# vagrant user: passwordless sudo, Vagrant's insecure key (swapped by Vagrant on first boot)
in_root useradd -m -s /bin/bash -G sudo vagrant
echo 'vagrant:vagrant' | in_root chpasswd
printf 'vagrant ALL=(ALL) NOPASSWD:ALL\nDefaults:vagrant !requiretty\n' > "$R/etc/sudoers.d/vagrant"
chmod 0440 "$R/etc/sudoers.d/vagrant"
install -d -m 0700 "$R/home/vagrant/.ssh"
install -m 0600 "$LABKIT_VAGRANT_PUBKEY" "$R/home/vagrant/.ssh/authorized_keys"
in_root chown -R vagrant:vagrant /home/vagrant/.ssh
# no DNS reverse lookups on login: they stall when the guest has no resolver yet
printf 'UseDNS no\n' > "$R/etc/ssh/sshd_config.d/labkit.conf"

# network: DHCP on the virtio NIC with systemd-networkd; client id from the MAC, so two VMs
# made from the same image never ask dnsmasq for the same lease
cat > "$R/etc/systemd/network/20-labkit-dhcp.network" <<'NET'
[Match]
Name=en* eth*

[Network]
DHCP=yes

[DHCPv4]
ClientIdentifier=mac
NET
in_root systemctl enable systemd-networkd.service systemd-resolved.service >/dev/null 2>&1
ln -sf ../run/systemd/resolve/stub-resolv.conf "$R/etc/resolv.conf"
echo "${LABKIT_HOSTNAME:-labkit-vm}" > "$R/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\t%s\n' "${LABKIT_HOSTNAME:-labkit-vm}" > "$R/etc/hosts"

# SSH host keys are made on first boot, never baked into the box
rm -f "$R"/etc/ssh/ssh_host_*
install -d "$R/etc/systemd/system/ssh.service.d"
cat > "$R/etc/systemd/system/ssh.service.d/labkit-hostkeys.conf" <<'UNIT'
[Service]
ExecStartPre=
ExecStartPre=/usr/bin/ssh-keygen -A
ExecStartPre=/usr/sbin/sshd -t
UNIT

# a fresh machine-id per VM (first boot fills it)
: > "$R/etc/machine-id"
rm -f "$R/var/lib/dbus/machine-id"

# units that only slow an emulated boot down
for u in e2scrub_reap.service e2scrub_all.timer apt-daily.timer apt-daily-upgrade.timer \
         man-db.timer fstrim.timer dpkg-db-backup.timer logrotate.timer \
         systemd-networkd-wait-online.service systemd-timesyncd.service; do
    ln -sf /dev/null "$R/etc/systemd/system/$u"
done

# the engine starts on first use (docker.socket), not at boot: an emulated boot stays short
in_root systemctl disable docker.service containerd.service >/dev/null 2>&1 || true
in_root systemctl enable docker.socket >/dev/null 2>&1

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
    APPEND root=UUID=$LABKIT_ROOT_UUID ro quiet console=tty0 console=ttyS0,115200n8
CONF
# leave no caches or logs of the build in the image
rm -rf "$R/var/cache/apt/"*.bin "$R/var/lib/apt/lists/"* "$R/var/log/"*.log
