#!/usr/bin/env bash
# Install profiles/slurm as your Snakemake profile named `slurm`, so that `snakemake --profile slurm`
# works (Snakemake looks profiles up in ./, then ~/.config/snakemake/, then /etc/xdg/snakemake/).
#
# Usage:  scripts/install_slurm_profile.sh [--link] [--force]
#   default  copy the profile to ${XDG_CONFIG_HOME:-~/.config}/snakemake/slurm/: edit the SITE lines
#            (account, partitions, cores) there, once; a git pull never overwrites your edits.
#   --link   symlink it instead: the profile follows this checkout (edit the SITE lines here).
#   --force  replace an existing `slurm` profile.
set -euo pipefail

source_dir=$(cd "$(dirname "$0")/../profiles/slurm" && pwd)
target=${XDG_CONFIG_HOME:-$HOME/.config}/snakemake/slurm
mode=copy
force=0
for arg in "$@"; do
    case $arg in
    --link) mode=link ;;
    --force) force=1 ;;
    *)
        echo "usage: $0 [--link] [--force]" >&2
        exit 2
        ;;
    esac
done

if [ -e "$target" ] || [ -L "$target" ]; then
    if [ "$force" -ne 1 ]; then
        echo "install_slurm_profile: $target exists; rerun with --force to replace it" >&2
        exit 1
    fi
    rm -rf "$target"
fi
mkdir -p "$(dirname "$target")"
if [ "$mode" = link ]; then
    ln -s "$source_dir" "$target"
else
    cp -r "$source_dir" "$target"
fi
echo "installed the hamflow SLURM profile: $target -> edit the SITE lines of $target/config.v8+.yaml"
echo "then, in the hamflow checkout: snakemake --profile slurm"
