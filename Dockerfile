# One image for every part: `edgemesh webhook|inject|webhook-tls|init|sidecar|gateway|tunnel-server`.

FROM node:24-slim AS build
WORKDIR /src
# gcc builds the sidecar's native L4 addon (sidecar/native/build.sh, run by npm ci).
RUN apt-get update \
 && apt-get install -y --no-install-recommends gcc libc6-dev \
 && rm -rf /var/lib/apt/lists/*
COPY package.json package-lock.json ./
COPY sidecar/native ./sidecar/native
# Production dependencies only; koffi ships its prebuilt binaries inside the package. The
# image must have the native addon: fail the build rather than ship the slow fallback.
RUN EDGEMESH_REQUIRE_NATIVE=1 npm ci --omit=dev --no-audit --no-fund
COPY bin ./bin
COPY lib ./lib
COPY webhook ./webhook
COPY init ./init
COPY sidecar ./sidecar
COPY gateway ./gateway
COPY tunnel-server ./tunnel-server
COPY scripts/strip-types.ts ./scripts/
# Ship JavaScript with the types stripped ahead of time, and the built addon as it is: running
# .ts directly would load Node's type stripper in every process, ~25 MB private memory per
# sidecar (bench/memory.ts).
RUN node --disable-warning=ExperimentalWarning scripts/strip-types.ts /app \
 && cp -r node_modules /app/node_modules

FROM node:24-slim
# iptables (nft and legacy backends) for `edgemesh init`; nothing else from the distro.
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /app /app
ENV NODE_ENV=production
ENTRYPOINT ["node", "/app/bin/main.js"]
