#!/bin/sh
# Boot a sandbox host: install the environment's key, make host keys once, run rc.local, serve SSH.
set -eu
install -d -m 700 -o ubuntu -g ubuntu /home/ubuntu/.ssh
printf '%s\n' "${SSH_AUTHORIZED_KEY:?no public key given}" > /home/ubuntu/.ssh/authorized_keys
chown ubuntu:ubuntu /home/ubuntu/.ssh/authorized_keys
chmod 600 /home/ubuntu/.ssh/authorized_keys
ssh-keygen -A >/dev/null
if [ -x /etc/rc.local ]; then /etc/rc.local || echo "rc.local failed" >&2; fi
exec /usr/sbin/sshd -D -e
