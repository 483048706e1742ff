#!/usr/bin/env bash
# The raw-tools baseline for benchmark (a): what `labkit up` does for one student's containers,
# written as a plain shell loop over `docker` (same images, network, limits, hardening and
# provisioning: a student account, a message of the day, the packages through apt).
# Usage: raw_containers.sh up|down LAB STUDENT PACKAGES...
set -euo pipefail
verb=$1 lab=$2 student=$3; shift 3
pkgs=("$@")
net="raw-$lab-$student"
distros=(debian:11 debian:12 debian:13 busybox:1.35)
name() { echo "raw-$lab-$student-$(echo "$1" | tr -cd 'a-z0-9')"; }
if [ "$verb" = down ]; then
  docker ps -aq --filter "label=bench.lab=$lab" | xargs -r docker rm -f >/dev/null 2>&1 || true
  docker network rm "$net" >/dev/null 2>&1 || true
  exit 0
fi
docker network create --label "bench.lab=$lab" "$net" >/dev/null
for d in "${distros[@]}"; do
  n=$(name "$d")
  img="labkit/${d/busybox:1.35/busybox:1.35}"
  docker run -d --name "$n" --hostname "$n" --network "$net" --label "bench.lab=$lab" \
    --memory 256m --cpus 1 --pids-limit 256 --cap-drop ALL \
    --cap-add CHOWN --cap-add DAC_OVERRIDE --cap-add FOWNER --cap-add FSETID --cap-add KILL \
    --cap-add SETGID --cap-add SETUID --cap-add NET_BIND_SERVICE --cap-add SYS_CHROOT \
    --security-opt no-new-privileges --stop-signal SIGKILL "$img" sleep infinity >/dev/null
done
provision() {
  local d=$1 n; n=$(name "$d")
  if [ "$d" = busybox:1.35 ]; then
    docker exec "$n" sh -c 'grep -q ^student: /etc/passwd || { echo "student:x:1000:1000::/home/student:/bin/sh" >> /etc/passwd; mkdir -p /home/student; }
      echo "raw lab - $(uname -r)" > /etc/motd'
  else
    docker exec "$n" sh -c "id student >/dev/null 2>&1 || useradd -m -s /bin/sh student
      echo \"raw lab - \$(uname -r)\" > /etc/motd
      if [ -n '${pkgs[*]:-}' ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ${pkgs[*]:-} >/dev/null; fi"
  fi
}
for d in "${distros[@]}"; do provision "$d" & done
wait
