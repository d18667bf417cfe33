# Shared by scripts/*.sh: find Go, install missing Debian packages.
# shellcheck shell=sh

PATH=$PATH:/usr/local/go/bin
export PATH

die() {
	echo "$(basename "$0"): $*" >&2
	exit 1
}

# need_go fails with advice when no Go toolchain is on PATH.
need_go() {
	command -v go >/dev/null 2>&1 ||
		die "Go is not installed: get Go 1.26 or newer from https://go.dev/dl/ (unpack to /usr/local/go); Debian's golang package is too old"
}

# need PROBE:PACKAGE...  installs each PACKAGE whose PROBE (a command name, or
# an absolute path) is missing. As root it uses apt-get; otherwise it says
# what to install and fails.
need() {
	missing=""
	for pair in "$@"; do
		probe=${pair%%:*}
		pkg=${pair#*:}
		case $probe in
		/*) [ -e "$probe" ] && continue ;;
		*) command -v "$probe" >/dev/null 2>&1 && continue ;;
		esac
		missing="$missing $pkg"
	done
	[ -z "$missing" ] && return 0
	if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
		die "missing packages:$missing (install them, e.g. apt-get install$missing)"
	fi
	echo "installing:$missing" >&2
	export DEBIAN_FRONTEND=noninteractive
	# shellcheck disable=SC2086 # word splitting of the package list is wanted
	apt-get install -y --no-install-recommends $missing >/dev/null 2>&1 || {
		apt-get update -qq &&
			apt-get install -y --no-install-recommends $missing
	} || die "apt-get install$missing failed"
}

# install_on_path BINARY DIR  makes DIR/NAME a symlink to BINARY, so the
# README's commands find it; a file of that name that is not a symlink is
# left alone (with a note).
install_on_path() {
	link=$2/$(basename "$1")
	if [ -e "$link" ] && [ ! -L "$link" ]; then
		echo "note: $link exists and is not a symlink; left alone (use $1)" >&2
		return 0
	fi
	mkdir -p "$2" && ln -sfn "$1" "$link" || die "cannot link $link to $1"
	case ":$PATH:" in
	*":$2:"*) echo "reflinkfs is on PATH: $link -> $1" >&2 ;;
	*) echo "$link -> $1 ($2 is not on PATH here; use $1)" >&2 ;;
	esac
}
