#!/bin/sh
# Boot a sandbox host: install the environment's key and make host keys once. `boot prepare` stops there (systemd
# runs it before sshd, see dockyard-boot.service); `boot` then runs rc.local and serves SSH, as a classic init.
set -eu
install -d -m 700 -o ubuntu -g ubuntu /home/ubuntu/.ssh
printf '%s\n' "${SSH_AUTHORIZED_KEY:?no public key given}" > /home/ubuntu/.ssh/authorized_keys
chown ubuntu:ubuntu /home/ubuntu/.ssh/authorized_keys
chmod 600 /home/ubuntu/.ssh/authorized_keys
ssh-keygen -A >/dev/null
[ "${1:-}" != prepare ] || exit 0
if [ -x /etc/rc.local ]; then /etc/rc.local || echo "rc.local failed" >&2; fi
exec /usr/sbin/sshd -D -e
