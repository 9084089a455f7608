#!/bin/sh
# Builds the sidecar's native L4 data path (l4.c + http1.c, its HTTP/1.1 framing → build/l4.node). Run by `npm ci` (the
# package's install script) and by the image build. Needs a C compiler (scripts/setup and the
# Dockerfile install gcc); the N-API headers come from the node-api-headers npm package, so
# nothing is downloaded. Without a compiler the sidecar still works: it falls back to Node's
# sockets (slower; it logs which path it uses), so this prints a warning instead of failing
# the install unless EDGEMESH_REQUIRE_NATIVE=1 (CI sets it).
set -eu
cd "$(dirname "$0")"
cc=${CC:-cc}
headers=$(cd ../.. && pwd)/node_modules/node-api-headers/include
if ! command -v "$cc" >/dev/null 2>&1 || [ ! -f "$headers/node_api.h" ]; then
  echo "edgemesh: no C compiler ($cc) or N-API headers: the sidecar will use Node's sockets for L4" >&2
  [ "${EDGEMESH_REQUIRE_NATIVE:-0}" = 1 ] && exit 1
  exit 0
fi
mkdir -p build
if [ "${EDGEMESH_NATIVE_SANITIZE:-0}" = 1 ]; then
  # A test build under AddressSanitizer + UndefinedBehaviorSanitizer, beside the real one:
  # any report aborts (-fno-sanitize-recover). The engine tests load it with
  # EDGEMESH_L4_ADDON=build/l4-sanitized.node, and Node needs libasan preloaded
  # (LD_PRELOAD=$(gcc -print-file-name=libasan.so)): an addon cannot bring ASan's runtime
  # in after the process has started (sidecar/proxy-engines.netns.test.ts does both).
  "$cc" -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all \
    -Wall -Wextra -Werror -fPIC -shared -fvisibility=hidden -I"$headers" \
    -o build/l4-sanitized.node.tmp l4.c http1.c -lpthread
  mv build/l4-sanitized.node.tmp build/l4-sanitized.node
  # The UDP data path (udp.c), the same way: EDGEMESH_UDP_ADDON=build/udp-sanitized.node.
  "$cc" -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all \
    -Wall -Wextra -Werror -fPIC -shared -fvisibility=hidden -I"$headers" \
    -o build/udp-sanitized.node.tmp udp.c -lpthread
  mv build/udp-sanitized.node.tmp build/udp-sanitized.node
  exit 0
fi
"$cc" -O2 -g0 -Wall -Wextra -Werror -fPIC -shared -fvisibility=hidden -I"$headers" \
  -o build/l4.node.tmp l4.c http1.c -lpthread
mv build/l4.node.tmp build/l4.node
# The UDP data path (udp.c → build/udp.node): transparent sockets for UDP capture (docs/udp.md).
"$cc" -O2 -g0 -Wall -Wextra -Werror -fPIC -shared -fvisibility=hidden -I"$headers" \
  -o build/udp.node.tmp udp.c -lpthread
mv build/udp.node.tmp build/udp.node
