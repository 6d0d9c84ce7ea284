# Shared helpers for the shell scripts in scripts/. Source it; it sets nothing
# but functions and EVHOST_ROOT (the repository root, whatever the cwd).
# shellcheck shell=bash

# shellcheck disable=SC2034 # used by the scripts that source this file
EVHOST_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

# say PREFIX MESSAGE...: one line on stderr, so stdout stays for results.
say() {
	local who=$1
	shift
	printf '%s: %s\n' "$who" "$*" >&2
}

die() {
	local who=$1
	shift
	printf '%s: error: %s\n' "$who" "$*" >&2
	exit 1
}

# Run a command as root: directly when we are root, through sudo otherwise.
# Without a terminal to ask on (CI, a pipe), sudo -n: where a password would
# be needed, fail saying so rather than wait for one nothing will type.
as_root() {
	if [[ $(id -u) -eq 0 ]]; then
		"$@"
	elif ! command -v sudo >/dev/null 2>&1; then
		printf 'need root for: %s (and sudo is not installed)\n' "$*" >&2
		return 1
	elif [[ -t 0 ]]; then
		sudo "$@"
	else
		sudo -n "$@"
	fi
}

# Whether something accepts TCP connections on 127.0.0.1:PORT.
port_in_use() {
	(exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}
