#!/usr/bin/env bash
# Builds the kvset container image (kvset-server as entrypoint, kvsetctl beside it) and tags it.
#
# Usage: docker/build-image.sh [--online | --offline] [--tag TAG] [--bin-dir DIR] [-q]
#
#   --online       docker build -f docker/Dockerfile: compiles inside the official rust image,
#                  runtime gcr.io/distroless/cc-debian12:nonroot. Needs the two base images (a
#                  registry, or local stand-ins: docker/standin-bases.sh). Uses buildx when it
#                  is installed (`docker buildx build --load --provenance=false`: a provenance
#                  attestation would make the result a manifest list, which `kind load` and
#                  `docker save` mishandle), else the classic builder: the Dockerfile needs
#                  nothing builder-specific.
#   --offline      builds the binaries on this host (cargo build --release, honouring
#                  CARGO_TARGET_DIR), then docker/Dockerfile.offline: FROM scratch + the binaries
#                  + exactly the shared libraries `ldd` says they load + a nonroot user. Needs no
#                  registry and no base image. The host must be glibc-based (Debian 12 here).
#   (neither)      $KVSET_IMAGE_BUILD (online|offline) when set; else online when the distroless
#                  base image is present or can be pulled within 20 s; else offline.
#   --tag TAG      image name:tag (default: $KVSET_IMAGE or kvset:dev)
#   --bin-dir DIR  offline only: take kvset-server and kvsetctl from DIR and do not run cargo
#                  (the Docker tests use the debug binaries they were built with this way; images
#                  for users are built from release binaries)
#   -q, --quiet    print only the image id on stdout
#
# Both paths produce the same layout: /usr/local/bin/{kvset-server,kvsetctl}, user 65532:65532,
# /data a volume owned by that user, ports 7379 (clients), 7479 (peers) and 7579 (metrics), and the image is
# checked by running `kvset-server --version` in it.
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
distroless=gcr.io/distroless/cc-debian12:nonroot

die() { echo "build-image: $*" >&2; exit 1; }
log() { [[ $quiet == 1 ]] || echo "build-image: $*" >&2; }

mode=${KVSET_IMAGE_BUILD:-}
tag=${KVSET_IMAGE:-kvset:dev}
bin_dir=
quiet=0
while [[ $# -gt 0 ]]; do
  case $1 in
    --online) mode=online ;;
    --offline) mode=offline ;;
    --tag) [[ $# -ge 2 ]] || die "--tag needs a value"; tag=$2; shift ;;
    --tag=*) tag=${1#--tag=} ;;
    --bin-dir) [[ $# -ge 2 ]] || die "--bin-dir needs a value"; bin_dir=$2; shift ;;
    --bin-dir=*) bin_dir=${1#--bin-dir=} ;;
    -q|--quiet) quiet=1 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown argument $1 (see --help)" ;;
  esac
  shift
done
case $mode in
  ''|online|offline) ;;
  *) die "KVSET_IMAGE_BUILD must be online or offline, not '$mode'" ;;
esac
[[ -z $bin_dir || $mode != online ]] || die "--bin-dir applies to --offline only"

command -v docker >/dev/null || die "docker not found; install Docker Engine"
docker info >/dev/null 2>&1 || die "cannot reach the Docker daemon (is it running? are you in the docker group?)"

if [[ -z $mode ]]; then
  if [[ -n $bin_dir ]]; then
    mode=offline
  elif docker image inspect "$distroless" >/dev/null 2>&1 \
    || timeout 20 docker pull -q "$distroless" >/dev/null 2>&1; then
    mode=online
  else
    mode=offline
    log "cannot pull $distroless: building offline (FROM scratch with host binaries)"
  fi
fi

version=$(sed -n '/^\[workspace.package\]/,/^\[/ s/^version *= *"\(.*\)"/\1/p' "$repo/Cargo.toml")
revision=$(git -C "$repo" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
if [[ $revision != unknown ]] && ! git -C "$repo" diff --quiet HEAD -- 2>/dev/null; then
  revision="$revision-dirty"
fi

build_args=(--build-arg "VERSION=${version:-dev}" --build-arg "REVISION=$revision" --tag "$tag")
previous=$(docker image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)
[[ $quiet == 0 ]] || build_args+=(--quiet)

if [[ $mode == online ]]; then
  if docker buildx version >/dev/null 2>&1; then
    log "building $tag from docker/Dockerfile with buildx (rust builder -> distroless)"
    docker buildx build --load --provenance=false "${build_args[@]}" -f "$repo/docker/Dockerfile" "$repo" >&2
  else
    log "building $tag from docker/Dockerfile with the classic builder (no buildx here)"
    DOCKER_BUILDKIT=0 docker build "${build_args[@]}" -f "$repo/docker/Dockerfile" "$repo" >&2
  fi
else
  if [[ -z $bin_dir ]]; then
    # A relative CARGO_TARGET_DIR means relative to where the caller stands, as for cargo.
    target_dir=${CARGO_TARGET_DIR:-$repo/target}
    [[ $target_dir == /* ]] || target_dir=$PWD/$target_dir
    log "cargo build --release (target dir $target_dir)"
    cargo_args=(build --release --locked -p kvset-server -p kvsetctl --bins)
    [[ $quiet == 0 ]] || cargo_args+=(--quiet)
    (cd "$repo" && CARGO_TARGET_DIR=$target_dir cargo "${cargo_args[@]}") >&2
    bin_dir=$target_dir/release
  fi
  for b in kvset-server kvsetctl; do
    [[ -x $bin_dir/$b ]] || die "$bin_dir/$b not found: build it first (cargo build --bins)"
  done

  ctx=$(mktemp -d "${TMPDIR:-/tmp}/kvset-image.XXXXXX")
  trap 'rm -rf "$ctx"' EXIT
  root=$ctx/rootfs
  mkdir -p "$root/usr/local/bin" "$root/etc" "$root/tmp" "$root/home/nonroot" "$ctx/data" "$ctx/record"
  chmod 1777 "$root/tmp"

  for b in kvset-server kvsetctl; do
    if command -v objcopy >/dev/null; then
      objcopy --strip-debug "$bin_dir/$b" "$root/usr/local/bin/$b"
    else
      cp "$bin_dir/$b" "$root/usr/local/bin/$b"
    fi
    chmod 0755 "$root/usr/local/bin/$b"
  done

  # Exactly the shared objects the binaries load, at the paths the dynamic loader looks for them
  # (ldd prints `name => /path (addr)` for libraries and `/path (addr)` for the loader).
  libs=$(for b in kvset-server kvsetctl; do ldd "$root/usr/local/bin/$b" 2>&1; done \
    | awk '/not found/ { print "MISSING " $1; next }
           $2 == "=>" && $3 ~ /^\// { print $3; next }
           $1 ~ /^\// && $2 ~ /^\(/ { print $1 }' | sort -u)
  if grep -q '^MISSING' <<<"$libs"; then
    die "shared libraries not found on this host: $(grep '^MISSING' <<<"$libs" | cut -d' ' -f2 | xargs)"
  fi
  for lib in $libs; do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
  log "shared libraries: $(xargs <<<"$libs")"

  cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
EOF
  cat >"$root/etc/group" <<'EOF'
root:x:0:
nonroot:x:65532:
EOF
  # glibc >= 2.34 has the files and dns lookups built in; this only fixes their order.
  echo 'hosts: files dns' >"$root/etc/nsswitch.conf"

  log "building $tag from docker/Dockerfile.offline (scratch + host binaries from $bin_dir)"
  # The classic builder is enough for this Dockerfile and is what works without buildx.
  docker build "${build_args[@]}" -f "$repo/docker/Dockerfile.offline" "$ctx" >&2
fi

# The image must at least start: this catches a missing shared library or a wrong entrypoint.
docker run --rm --network none "$tag" --version >/dev/null \
  || die "the image $tag does not run: docker run --rm $tag --version failed"
id=$(docker image inspect --format '{{.Id}}' "$tag")
# The image this tag named before is now untagged: drop it unless a container still uses it.
if [[ -n $previous && $previous != "$id" ]]; then
  docker image rm "$previous" >/dev/null 2>&1 || true
fi
size=$(docker image inspect --format '{{.Size}}' "$tag")
log "built $tag ($mode, $((size / 1024 / 1024)) MiB, $id)"
if [[ $quiet == 1 ]]; then echo "$id"; fi
