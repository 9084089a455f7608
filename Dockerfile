# One image for every part: `edgemesh webhook|inject|webhook-tls|init|sidecar|gateway|tunnel-server`.
# Node 24 runs the TypeScript sources directly (type stripping), so there is no compile step.

FROM node:24-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
# Production dependencies only; koffi ships its prebuilt binaries inside the package.
RUN npm ci --omit=dev --ignore-scripts=false --no-audit --no-fund

FROM node:24-slim
# iptables (nft and legacy backends) for `edgemesh init`; nothing else from the distro.
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY package.json ./
COPY bin ./bin
COPY lib ./lib
COPY webhook ./webhook
COPY init ./init
COPY sidecar ./sidecar
COPY gateway ./gateway
COPY tunnel-server ./tunnel-server
# Tests and fixtures are not part of the image.
RUN find . -path ./node_modules -prune -o \( -name '*.test.ts' -o -name testdata \) -print | xargs rm -rf \
 && ln -s /app/bin/edgemesh /usr/local/bin/edgemesh
ENV NODE_ENV=production
ENTRYPOINT ["/app/bin/edgemesh"]
