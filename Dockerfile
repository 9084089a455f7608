# One image for every part: `edgemesh webhook|inject|webhook-tls|init|sidecar|gateway|tunnel-server|signer`.
#
# The same contents as `scripts/image` builds without Docker (docs/image.md lists them): the
# build stage runs that script with --rootfs-only, and the image is the resulting directory on
# scratch, in the same two layers (runtime: node + libs + iptables; app: /app), so a release
# that changes only edgemesh pulls only /app. linux/amd64 only (iptables' module path).

FROM node:24-bookworm-slim AS build
# gcc builds the sidecar's native L4 addon; binutils strips node; iptables (nft and legacy
# backends) is copied from here into the image with exactly the libraries it links.
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev binutils iptables \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY package.json package-lock.json ./
COPY sidecar/native ./sidecar/native
# With dev dependencies: the image's Node is the npm `node` package the repo pins. The
# production node_modules for /app come from scripts/image's own `npm ci --omit=dev`, which
# must build the native addon (EDGEMESH_REQUIRE_NATIVE=1): no silent slow fallback.
RUN npm ci --no-audit --no-fund
COPY bin ./bin
COPY lib ./lib
COPY webhook ./webhook
COPY init ./init
COPY sidecar ./sidecar
COPY gateway ./gateway
COPY tunnel-server ./tunnel-server
COPY signer ./signer
COPY ctl ./ctl
# What `edgemesh install` renders (the image holds /app/manifests).
COPY manifests/kustomization.yaml ./manifests/
COPY manifests/base ./manifests/base
COPY manifests/overlays ./manifests/overlays
COPY scripts/image scripts/strip-types.ts ./scripts/
COPY scripts/images ./scripts/images
# The context has no .git: the commit /app/build-info.json records (`edgemesh version`, the
# edgemesh_build_info metric) comes in as a build argument, e.g.
#   docker build --build-arg EDGEMESH_COMMIT=$(git rev-parse HEAD) .
# Without it the image says commit "unknown".
ARG EDGEMESH_COMMIT=
# Writes /rootfs and runs the image's smoke tests in it (chroot): node, every subcommand's
# --help, every module and addon loads, both iptables backends answer.
RUN EDGEMESH_COMMIT=$EDGEMESH_COMMIT scripts/image --rootfs-only /rootfs && mv /rootfs/app /app

FROM scratch
COPY --from=build /rootfs /
COPY --from=build /app /app
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin NODE_ENV=production
ENTRYPOINT ["/usr/local/bin/node", "/app/bin/main.js"]
