#!/bin/sh
# Installs studio-worker from a release archive (Linux, macOS):
#
#   install.sh [--archive FILE] [--version V] [--variant cpu|cuda]
#              [--feed URL] [--prefix DIR] [--bin-dir DIR] [--service]
#   install.sh --ui [--archive FILE] [--version V] [--feed URL] [--prefix DIR]
#              [--bin-dir DIR]
#
# Without --archive it asks the release feed (GitHub releases JSON) for the
# newest release (or --version V) and downloads this machine's archive and
# its .sha256; with --archive it takes a local one (its .sha256 beside it).
# The digest must match, and the archive's manifest.json must name the
# product studio-worker and this machine's target: else nothing is
# installed. Layout (the same one self-update keeps):
#   PREFIX/versions/V/   the whole release (studio-worker, runners, ONNX Runtime)
#   PREFIX/current       a link to versions/V, switched with one rename
#   BIN_DIR/studio-worker  a link to PREFIX/current/studio-worker
# Defaults: PREFIX ~/.local/share/studio-worker, BIN_DIR ~/.local/bin, the
# feed of the official releases, variant cpu. --service then runs
# `studio-worker install-service`. --ui installs the optional desktop
# window instead (its own archive, studio-worker-ui-V-TARGET.tar.xz,
# product studio-worker-ui) in PREFIX/ui, linked as BIN_DIR/studio-worker-ui;
# it starts PREFIX/current/studio-worker when no worker runs. Self-update
# leaves it alone. Needs python3, tar and xz, sha256sum or
# shasum, and curl to download.
set -eu

archive="" version="" variant="cpu" service=0 product="studio-worker"
feed="${STUDIO_WORKER_FEED:-https://api.github.com/repos/webbertakken/studio-worker/releases}"
prefix="${XDG_DATA_HOME:-$HOME/.local/share}/studio-worker"
bin_dir="$HOME/.local/bin"
while [ $# -gt 0 ]; do
  case "$1" in
    --archive) archive="$2"; shift 2 ;;
    --version) version="$2"; shift 2 ;;
    --variant) variant="$2"; shift 2 ;;
    --feed) feed="$2"; shift 2 ;;
    --prefix) prefix="$2"; shift 2 ;;
    --bin-dir) bin_dir="$2"; shift 2 ;;
    --service) service=1; shift ;;
    --ui) product="studio-worker-ui"; shift ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
done

die() { echo "install.sh: $*" >&2; exit 1; }

case "$(uname -s)-$(uname -m)" in
  Linux-x86_64) target=x86_64-unknown-linux-gnu ;;
  Linux-aarch64|Linux-arm64) target=aarch64-unknown-linux-gnu ;;
  Darwin-x86_64) target=x86_64-apple-darwin ;;
  Darwin-arm64) target=aarch64-apple-darwin ;;
  *) die "no release for $(uname -s) $(uname -m)" ;;
esac

sha256() {
  if command -v sha256sum >/dev/null 2>&1; then sha256sum "$1" | cut -d' ' -f1
  else shasum -a 256 "$1" | cut -d' ' -f1; fi
}

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT INT TERM

if [ -z "$archive" ]; then
  command -v curl >/dev/null 2>&1 || die "curl is needed to download (or pass --archive FILE)"
  curl -fsSL -H "Accept: application/vnd.github+json" "$feed" -o "$work/feed.json" \
    || die "cannot read the release feed $feed"
  # The newest non-draft, non-prerelease release (or the one asked for),
  # and its asset URLs for this target and variant.
  urls="$(python3 - "$work/feed.json" "$version" "$target" "$variant" "$product" <<'PY'
import json, re, sys
path, want, target, variant, product = sys.argv[1:]
data = json.load(open(path))
releases = data if isinstance(data, list) else [data]
def ver(tag):
    m = re.fullmatch(r"(?:studio-worker-)?v?(\d+)\.(\d+)\.(\d+)", tag or "")
    return tuple(int(x) for x in m.groups()) if m else None
best = None
for r in releases:
    v = ver(r.get("tag_name"))
    if v is None or r.get("draft") or (r.get("prerelease") and not want):
        continue
    if want and ".".join(map(str, v)) != want.lstrip("v"):
        continue
    if best is None or v > best[0]:
        best = (v, r)
if best is None:
    sys.exit("no matching release in the feed")
v = ".".join(map(str, best[0]))
if product == "studio-worker":
    name = f"studio-worker-{v}-{target}-{variant}.tar.xz"
else:
    name = f"{product}-{v}-{target}.tar.xz"
assets = {a["name"]: a["browser_download_url"] for a in best[1].get("assets", [])}
if name not in assets or name + ".sha256" not in assets:
    sys.exit(f"release {v} has no {name} with its .sha256")
print(assets[name]); print(assets[name + ".sha256"])
PY
)" || die "no archive to install"
  url="$(echo "$urls" | sed -n 1p)"
  archive="$work/$(basename "$url")"
  echo "downloading $url"
  curl -fsSL "$url" -o "$archive" || die "download failed: $url"
  curl -fsSL "$(echo "$urls" | sed -n 2p)" -o "$archive.sha256" || die "download failed: the .sha256"
fi

[ -f "$archive" ] || die "$archive does not exist"
[ -f "$archive.sha256" ] || die "$archive.sha256 is missing: an archive is installed only with its digest"
want="$(cut -d' ' -f1 < "$archive.sha256")"
got="$(sha256 "$archive")"
[ "$want" = "$got" ] || die "$archive: SHA-256 $got does not match $want (from its .sha256)"

mkdir -p "$work/unpack"
tar -xf "$archive" -C "$work/unpack" || die "cannot unpack $archive"
set -- "$work/unpack"/*
[ $# -eq 1 ] && [ -f "$1/manifest.json" ] || die "$archive has no manifest.json in one top folder"
release="$1"
fields="$(python3 - "$release" "$target" "$product" <<'PY'
import hashlib, json, os, sys
root, target, product = sys.argv[1:]
m = json.load(open(os.path.join(root, "manifest.json")))
if m.get("product") != product:
    sys.exit(f"the archive is {m.get('product')!r}, not {product}")
if m.get("target") != target:
    sys.exit(f"the archive is for {m.get('target')}, this machine is {target}")
for f in m["files"]:
    with open(os.path.join(root, f["path"]), "rb") as fh:
        if hashlib.sha256(fh.read()).hexdigest() != f["sha256"]:
            sys.exit(f"{f['path']} does not match the manifest")
print(m["version"])
PY
)" || die "the archive's manifest was refused"
version="$fields"

if [ "$product" = "studio-worker-ui" ]; then
  # The window is one binary, kept apart from the versions self-update
  # switches between.
  mkdir -p "$prefix" "$bin_dir"
  rm -rf "$prefix/ui.old"
  if [ -e "$prefix/ui" ]; then mv "$prefix/ui" "$prefix/ui.old"; fi
  mv "$release" "$prefix/ui"
  rm -rf "$prefix/ui.old"
  ln -sfn "$prefix/ui/studio-worker-ui" "$bin_dir/studio-worker-ui"
  echo "installed studio-worker-ui $version in $prefix/ui"
  echo "  $bin_dir/studio-worker-ui -> $prefix/ui/studio-worker-ui"
  [ -e "$prefix/current/studio-worker" ] || echo "  no worker in $prefix/current yet: install it too (install.sh without --ui)"
  exit 0
fi

mkdir -p "$prefix/versions" "$bin_dir"
if [ -e "$prefix/versions/$version" ]; then
  rm -rf "$prefix/versions/$version.old"
  mv "$prefix/versions/$version" "$prefix/versions/$version.old"
fi
mv "$release" "$prefix/versions/$version"
rm -rf "$prefix/versions/$version.old"
# One rename switches `current` (a new link beside it, then over it).
# (rename(2) replaces the old link itself; `mv` would move into it.)
rm -f "$prefix/current.new"
ln -s "versions/$version" "$prefix/current.new"
python3 -c 'import os, sys; os.replace(sys.argv[1], sys.argv[2])' "$prefix/current.new" "$prefix/current" \
  || die "cannot switch $prefix/current"
ln -sfn "$prefix/current/studio-worker" "$bin_dir/studio-worker"
echo "installed studio-worker $version in $prefix/versions/$version"
echo "  $bin_dir/studio-worker -> $prefix/current/studio-worker"
case ":$PATH:" in *":$bin_dir:"*) ;; *) echo "  add $bin_dir to PATH to run it as studio-worker" ;; esac

if [ "$service" -eq 1 ]; then
  "$prefix/current/studio-worker" install-service
fi
