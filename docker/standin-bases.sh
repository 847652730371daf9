#!/usr/bin/env bash
# Makes local stand-ins for the two base images docker/Dockerfile names, for machines that
# cannot pull from a registry (CI here), so the unmodified Dockerfile can still be built with
# `docker build`:
#
#   docker.io/library/rust:<RUST_VERSION>-bookworm  a Debian 12 rootfs (debootstrap, minbase +
#       gcc, libc6-dev, binutils, ca-certificates) plus this host's Rust toolchain, laid out as
#       the official image lays it out: CARGO_HOME=/usr/local/cargo,
#       RUSTUP_HOME=/usr/local/rustup, cargo and rustc on PATH; and this host's CA bundle, so
#       cargo reaches crates.io through whatever TLS-inspecting proxy the host's network uses.
#   gcr.io/distroless/cc-debian12:nonroot          a minimal rootfs: glibc and libgcc_s from the
#       same Debian 12 rootfs, the CA bundle, /etc/passwd and /etc/group with the nonroot user
#       65532, /home/nonroot, /tmp; user 65532 as in distroless.
#
# Usage: docker/standin-bases.sh [--rust-version X.Y] [--mirror URL] [--force]
#
#   --rust-version  the tag the Dockerfile's ARG RUST_VERSION gives (default: read from the
#                   Dockerfile). The host's rustc must be that version: the stand-in carries the
#                   host toolchain, and a stand-in with the wrong compiler would test nothing.
#   --mirror URL    Debian mirror for debootstrap (default: the first deb.debian.org-style URI
#                   in apt's sources, else http://deb.debian.org/debian)
#   --force         rebuild the cached rootfs and re-import both images
#
# Idempotent and cached: the debootstrap rootfs is kept as a tarball under
# ${KVSET_CACHE:-~/.cache/kvset}/standin/ (never in git), and an image is imported again only
# when its recorded input stamp (rootfs checksum + toolchain version + CA bundle) changed. Needs
# root (for debootstrap), debootstrap (installed with apt-get when missing) and the Docker
# engine. A real image already under one of the names (pulled from its registry: it lacks this
# script's label) is used as it is and never replaced.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${KVSET_CACHE:-$HOME/.cache/kvset}/standin
label=org.kvset.standin

die() { echo "standin-bases: $*" >&2; exit 1; }
log() { echo "standin-bases: $*" >&2; }

rust_version=
mirror=
force=0
while [[ $# -gt 0 ]]; do
  case $1 in
    --rust-version) [[ $# -ge 2 ]] || die "--rust-version needs a value"; rust_version=$2; shift ;;
    --mirror) [[ $# -ge 2 ]] || die "--mirror needs a value"; mirror=$2; shift ;;
    --force) force=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
  shift
done

dockerfile=$repo/docker/Dockerfile
if [[ -z $rust_version ]]; then
  rust_version=$(sed -n 's/^ARG RUST_VERSION=\(.*\)$/\1/p' "$dockerfile" | head -n1)
  [[ -n $rust_version ]] || die "no 'ARG RUST_VERSION=' in $dockerfile"
fi
# The two FROM lines, with the ARG substituted: exactly the names the build will look up.
builder_ref=$(sed -n 's/^FROM \([^ ]*\) AS build$/\1/p' "$dockerfile" | sed "s/\${RUST_VERSION}/$rust_version/")
runtime_ref=$(awk '/^FROM / && !/ AS / { print $2 }' "$dockerfile" | tail -n1)
[[ -n $builder_ref && -n $runtime_ref ]] || die "cannot find the builder and runtime FROM lines in $dockerfile"

command -v docker >/dev/null || die "docker not found"
docker info >/dev/null 2>&1 || die "cannot reach the Docker daemon"
command -v rustc >/dev/null || die "rustc not found: the builder stand-in carries the host toolchain"
host_rust=$(rustc --version | awk '{ print $2 }')
[[ $host_rust == "$rust_version" || $host_rust == "$rust_version".* ]] \
  || die "host rustc is $host_rust but the Dockerfile wants rust:$rust_version; install that toolchain (rustup toolchain install $rust_version) or pass --rust-version"
sysroot=$(rustc --print sysroot)
host_triple=$(rustc -vV | sed -n 's/^host: //p')

if [[ -z $mirror ]]; then
  mirror=$(grep -hoE '^(URIs:|deb) +https?://[^ ]+/debian/?( |$)' /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null \
    | awk '{ print $2 }' | head -n1 || true)
  mirror=${mirror:-http://deb.debian.org/debian}
fi

mkdir -p "$cache"
rootfs_tar=$cache/bookworm-rootfs.tar

# 1. The Debian 12 rootfs, once.
if [[ $force == 1 || ! -s $rootfs_tar ]]; then
  [[ $(id -u) == 0 ]] || die "debootstrap needs root"
  if ! command -v debootstrap >/dev/null && command -v apt-get >/dev/null; then
    log "installing debootstrap (apt-get)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap; } >&2 \
      || die "could not install debootstrap"
  fi
  command -v debootstrap >/dev/null || die "debootstrap not found (apt-get install debootstrap)"
  work=$(mktemp -d "$cache/rootfs.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  log "debootstrap bookworm from $mirror (a few minutes; cached in $rootfs_tar)"
  debootstrap --variant=minbase --include=gcc,libc6-dev,binutils,ca-certificates \
    bookworm "$work/root" "$mirror" >"$cache/debootstrap.log" 2>&1 \
    || die "debootstrap failed; see $cache/debootstrap.log"
  rm -rf "$work/root/var/cache/apt/archives/"*.deb "$work/root/var/lib/apt/lists/"*
  tar --numeric-owner -C "$work/root" -cf "$rootfs_tar.tmp" .
  mv "$rootfs_tar.tmp" "$rootfs_tar"
  rm -rf "$work"
  trap - EXIT
fi
rootfs_sum=$(sha256sum "$rootfs_tar" | cut -c1-16)

# Imports the tar stream on stdin as $1 unless an image with stamp $2 is already there.
current_stamp() {
  docker image inspect --format "{{ index .Config.Labels \"$label\" }}" "$1" 2>/dev/null || true
}
needs_import() {
  local ref=$1 stamp=$2 have
  have=$(current_stamp "$ref")
  if docker image inspect "$ref" >/dev/null 2>&1 && [[ -z $have || $have == "<no value>" ]]; then
    log "$ref is a real image (not a stand-in): using it as it is"
    return 1
  fi
  [[ $force == 1 || $have != "$stamp" ]]
}

# 2. The builder: rootfs + the host toolchain (binaries and libraries, no docs or sources).
# The host's CA bundle replaces Debian's in the builder: cargo inside the build must reach
# crates.io the way this machine does, and a network that inspects TLS with its own CA (as this
# CI machine's does) is trusted only through the host's bundle. The official image is used
# unchanged wherever it can be pulled; this concerns the stand-in only.
host_cas=/etc/ssl/certs/ca-certificates.crt
[[ -s $host_cas ]] || die "no CA bundle at $host_cas on this host"
cas_sum=$(sha256sum "$host_cas" | cut -c1-16)
builder_stamp="rootfs-$rootfs_sum rust-$host_rust cas-$cas_sum"
if needs_import "$builder_ref" "$builder_stamp"; then
  toolchain=$rust_version-$host_triple
  stage=$(mktemp -d "$cache/builder.XXXXXX")
  trap 'rm -rf "$stage"' EXIT
  cp "$rootfs_tar" "$stage/image.tar"
  mkdir -p "$stage/tc/usr/local/rustup/toolchains/$toolchain" "$stage/tc/usr/local/cargo/bin"
  for d in bin lib libexec etc; do
    [[ -e $sysroot/$d ]] && cp -a "$sysroot/$d" "$stage/tc/usr/local/rustup/toolchains/$toolchain/"
  done
  mkdir -p "$stage/tc/etc/ssl/certs"
  cp -L "$host_cas" "$stage/tc/etc/ssl/certs/ca-certificates.crt"
  for b in cargo rustc rustdoc; do
    ln -s "../../rustup/toolchains/$toolchain/bin/$b" "$stage/tc/usr/local/cargo/bin/$b"
  done
  tar --delete -f "$stage/image.tar" ./etc/ssl/certs/ca-certificates.crt
  tar --numeric-owner --owner=0 --group=0 -C "$stage/tc" -rf "$stage/image.tar" \
    ./usr/local/rustup ./usr/local/cargo ./etc/ssl/certs/ca-certificates.crt
  log "importing $builder_ref (bookworm + rust $host_rust)"
  docker import \
    --change "ENV RUSTUP_HOME=/usr/local/rustup" \
    --change "ENV CARGO_HOME=/usr/local/cargo" \
    --change "ENV PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    --change "ENV RUST_VERSION=$host_rust" \
    --change "LABEL $label=\"$builder_stamp\"" \
    --change 'CMD ["bash"]' \
    "$stage/image.tar" "$builder_ref" >/dev/null
  rm -rf "$stage"
  trap - EXIT
else
  log "$builder_ref is up to date"
fi

# 3. The runtime: what distroless/cc-debian12 holds that a dynamically linked Rust binary needs.
runtime_stamp="rootfs-$rootfs_sum"
if needs_import "$runtime_ref" "$runtime_stamp"; then
  stage=$(mktemp -d "$cache/runtime.XXXXXX")
  trap 'rm -rf "$stage"' EXIT
  mkdir -p "$stage/full" "$stage/root"
  tar -C "$stage/full" -xf "$rootfs_tar" ./var/lib/dpkg/info ./lib ./usr/lib ./lib64 ./usr/lib64 ./etc/ssl/certs ./etc/os-release ./usr/lib/os-release ./usr/share/zoneinfo 2>/dev/null || true
  # Debian 12 is merged-/usr: /lib and /lib64 are links into /usr. Make them first, so the
  # package file lists (which name /lib/...) land in /usr/lib like in Debian.
  for l in lib lib64; do
    if [[ -L $stage/full/$l ]]; then
      mkdir -p "$stage/root/usr/$l"
      cp -a "$stage/full/$l" "$stage/root/$l"
    fi
  done
  # Every file of the packages libc6 and libgcc-s1 (the runtime libraries distroless/cc carries).
  for pkg in libc6 libgcc-s1; do
    list=$stage/full/var/lib/dpkg/info/$pkg:amd64.list
    [[ -f $list ]] || list=$stage/full/var/lib/dpkg/info/$pkg.list
    [[ -f $list ]] || die "no file list for $pkg in the rootfs"
    while IFS= read -r f; do
      [[ -e $stage/full$f || -L $stage/full$f ]] || continue
      if [[ -d $stage/full$f && ! -L $stage/full$f ]]; then
        mkdir -p "$stage/root$f"
      elif [[ ! -e $stage/root$f && ! -L $stage/root$f ]]; then
        mkdir -p "$stage/root$(dirname "$f")"
        cp -a "$stage/full$f" "$stage/root$f"
      fi
    done <"$list"
  done
  mkdir -p "$stage/root/etc/ssl/certs" "$stage/root/home/nonroot" "$stage/root/tmp" "$stage/root/root"
  cp -L "$stage/full/etc/ssl/certs/ca-certificates.crt" "$stage/root/etc/ssl/certs/"
  cp -L "$stage/full/etc/os-release" "$stage/root/etc/os-release" 2>/dev/null || true
  chmod 1777 "$stage/root/tmp"
  chmod 0700 "$stage/root/root"
  chown 65532:65532 "$stage/root/home/nonroot"
  cat >"$stage/root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
EOF
  cat >"$stage/root/etc/group" <<'EOF'
root:x:0:
nobody:x:65534:
tty:x:5:
staff:x:50:
nonroot:x:65532:
EOF
  echo 'hosts: files dns' >"$stage/root/etc/nsswitch.conf"
  log "importing $runtime_ref (glibc, libgcc_s, CA certificates, user 65532)"
  tar --numeric-owner -C "$stage/root" -c . | docker import \
    --change "USER 65532" \
    --change "WORKDIR /home/nonroot" \
    --change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    --change "ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt" \
    --change "LABEL $label=\"$runtime_stamp\"" \
    - "$runtime_ref" >/dev/null
  rm -rf "$stage"
  trap - EXIT
else
  log "$runtime_ref is up to date"
fi

log "ready: $builder_ref, $runtime_ref"
