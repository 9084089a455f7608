"""A stand-in for the sidecar's transparent UDP socket in init/capture.netns.test.ts: binds
PORT with IP_TRANSPARENT (needs CAP_NET_ADMIN) and IP_RECVORIGDSTADDR on IPv4 and IPv6, and
prints one line per datagram: `got <data> from <client> origdst <ip:port>`. Python because
Node's dgram cannot set these options nor read the cmsg (docs/udp.md).
usage: udp-origdst.py PORT
"""
import select
import socket
import struct
import sys

IP_TRANSPARENT, IP_RECVORIGDSTADDR = 19, 20
IPV6_TRANSPARENT, IPV6_RECVORIGDSTADDR = 75, 74
SOL_IPV6 = 41

port = int(sys.argv[1])
v4 = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
v4.setsockopt(socket.SOL_IP, IP_TRANSPARENT, 1)
v4.setsockopt(socket.SOL_IP, IP_RECVORIGDSTADDR, 1)
v4.bind(('0.0.0.0', port))
v6 = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
v6.setsockopt(SOL_IPV6, socket.IPV6_V6ONLY, 1)
v6.setsockopt(SOL_IPV6, IPV6_TRANSPARENT, 1)
v6.setsockopt(SOL_IPV6, IPV6_RECVORIGDSTADDR, 1)
v6.bind(('::', port))
print('ready', flush=True)


def origdst(level, kind, data):
    if level == socket.SOL_IP and kind == IP_RECVORIGDSTADDR:  # struct sockaddr_in
        return '%s:%d' % (socket.inet_ntop(socket.AF_INET, data[4:8]), struct.unpack('!H', data[2:4])[0])
    if level == SOL_IPV6 and kind == IPV6_RECVORIGDSTADDR:  # struct sockaddr_in6
        return '[%s]:%d' % (socket.inet_ntop(socket.AF_INET6, data[8:24]), struct.unpack('!H', data[2:4])[0])
    return None


while True:
    for s in select.select([v4, v6], [], [])[0]:
        data, anc, _flags, addr = s.recvmsg(2048, 256)
        dst = [d for d in (origdst(*a) for a in anc) if d] or ['none']
        client = ('[%s]:%d' if s is v6 else '%s:%d') % addr[:2]
        print('got %s from %s origdst %s' % (data.decode(errors='replace').strip(), client, dst[0]), flush=True)
