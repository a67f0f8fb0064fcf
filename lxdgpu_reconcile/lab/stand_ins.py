"""Files the lab's busybox image carries so that the tool's first passwords work in it. Pure data.

Debian's ``busybox-static`` has ``passwd`` and ``mkpasswd`` but no ``chpasswd`` applet, and the
lab has no VNC server. The image therefore gets:

- ``/etc/shadow`` with a locked ``ubuntu`` (uid 1000) entry, as a fresh Ubuntu image has;
- ``/usr/sbin/chpasswd``: a stand-in for shadow-utils' ``chpasswd``: reads ``USER:PASSWORD``
  lines on standard input and puts a SHA-512 crypt of each password (busybox ``mkpasswd``, the
  password on its standard input, never an argument) and today's day number into the user's
  ``/etc/shadow`` line;
- ``/usr/bin/vncpasswd``: a stand-in for TigerVNC's ``vncpasswd -f``: it prints the SHA-256 of
  the first line of standard input, not VNC's obfuscated password (there is no VNC server to
  read it in the lab; the tests compare the digest).
"""

from __future__ import annotations

#: ``/etc/shadow`` of the lab image: ``root`` and ``ubuntu`` locked, as in a fresh image.
SHADOW = "root:*:19000:0:99999:7:::\nubuntu:!:19000:0:99999:7:::\n"

CHPASSWD = """#!/bin/sh
# lxdgpu-reconcile lab stand-in for chpasswd (busybox-static has no chpasswd applet): reads
# USER:PASSWORD lines on standard input and writes a SHA-512 crypt of each password into
# /etc/shadow. The password reaches mkpasswd on its standard input, never as an argument.
set -eu
umask 077
today=$(( $(date +%s) / 86400 ))
while IFS= read -r line || [ -n "$line" ]; do
    user=${line%%:*}
    hash=$(mkpasswd -m sha512 -P 0 <<EOF
${line#*:}
EOF
)
    if ! LXDGPU_U=$user LXDGPU_H=$hash LXDGPU_D=$today awk -F: -v OFS=: '
        $1 == ENVIRON["LXDGPU_U"] { $2 = ENVIRON["LXDGPU_H"]; $3 = ENVIRON["LXDGPU_D"]; found = 1 }
        { print }
        END { exit found ? 0 : 3 }' /etc/shadow > /etc/shadow.lxdgpu-new; then
        rm -f /etc/shadow.lxdgpu-new
        echo "chpasswd: user '$user' does not exist in /etc/shadow" >&2
        exit 1
    fi
    cat /etc/shadow.lxdgpu-new > /etc/shadow
    rm -f /etc/shadow.lxdgpu-new
done
"""

VNCPASSWD = """#!/bin/sh
# lxdgpu-reconcile lab stand-in for TigerVNC's `vncpasswd -f` (the lab has no VNC server): prints
# the SHA-256 of the first line of standard input instead of VNC's obfuscated password.
if [ "${1:-}" != "-f" ]; then
    echo "vncpasswd (lab stand-in): only -f is supported" >&2
    exit 2
fi
head -n 1 | tr -d '\\n' | sha256sum | cut -d ' ' -f 1
"""

#: Executable stand-ins: path in the rootfs, script.
STAND_INS: tuple[tuple[str, str], ...] = (
    ("usr/sbin/chpasswd", CHPASSWD),
    ("usr/bin/vncpasswd", VNCPASSWD),
)
