#!/usr/bin/env bash
# Install the embedded datasets' sources: Debian font + Fashion-MNIST packages (apt) and the emoji npm packages
# (pinned, into .cache/npm). Idempotent: a second run only checks. Called by `make setup`.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(fonts-ipafont-mincho fonts-ipafont-gothic fonts-morisawa-bizud-mincho fonts-morisawa-bizud-gothic
  fonts-vlgothic fonts-wqy-zenhei fonts-arphic-uming fonts-arphic-ukai fonts-cwtex-ming fonts-cwtex-kai fonts-cwtex-fs
  fonts-dejima-mincho fonts-mplus fonts-motoya-l-maruberi fonts-motoya-l-cedar fonts-seto fonts-kiloji
  fonts-yusei-magic fonts-kouzan-mouhitsu fonts-aoyagi-soseki fonts-klee dataset-fashion-mnist)
# keep in sync with lib/datasets/emoji.py PACKAGES
NPM_PACKAGES=(emoji-datasource-google@16.0.0 emoji-datasource-twitter@16.0.0 openmoji@17.0.0)
NPM_PREFIX=.cache/npm

bash scripts/apt_require.sh font/dataset "${APT_PACKAGES[@]}"

need=()
for spec in "${NPM_PACKAGES[@]}"; do
  name=${spec%@*}; version=${spec##*@}
  have=$(node -p "require('./$NPM_PREFIX/node_modules/$name/package.json').version" 2>/dev/null || true)
  [ "$have" = "$version" ] || need+=("$spec")
done
if [ ${#need[@]} -eq 0 ]; then
  echo "npm: ${NPM_PACKAGES[*]} present in $NPM_PREFIX"
else
  command -v npm >/dev/null || { echo "npm: not found; install it: apt-get install -y npm" >&2; exit 1; }
  echo "npm: installing ${need[*]} into $NPM_PREFIX"
  mkdir -p "$NPM_PREFIX"
  # all pinned packages at once: npm --no-save would otherwise prune the ones not named
  npm install --prefix "$NPM_PREFIX" --no-save --no-audit --no-fund --loglevel=error "${NPM_PACKAGES[@]}" >/dev/null
fi
echo "data sources ready (images are rendered into .cache/ on first use)"
