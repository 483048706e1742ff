# shellcheck shell=bash
# Sourced by the set-up scripts: install the Debian packages that are missing, once.
#   ensure_debs WHO DESCRIPTION PACKAGE...
# WHO prefixes the messages (setup, setup-lxc, ...); DESCRIPTION is said when all are present.
# Not root and something missing: names the packages and the command, and exits 1.
ensure_debs() {
  local who=$1 present=$2 p
  shift 2
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
  done
  if ((${#missing[@]} == 0)); then
    printf '%s: %s\n' "$who" "$present"
    return 0
  fi
  if [ "$(id -u)" != 0 ]; then
    echo "$who: missing Debian packages: ${missing[*]}; run as root or: sudo apt-get install ${missing[*]}" >&2
    exit 1
  fi
  printf '%s: installing %s\n' "$who" "${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
