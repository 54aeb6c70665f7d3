#!/usr/bin/env bash
# Install the edge client on Raspberry Pi OS (Bookworm, Pi 4/5). Run as root from the
# project checkout:  sudo pi_edge/deploy/install.sh
set -euo pipefail
SRC="$(cd "$(dirname "$0")/../.." && pwd)"
apt-get update -q
apt-get install -y -q python3-venv python3-picamera2 python3-lgpio python3-opencv libopenblas0
id pi-edge >/dev/null 2>&1 || useradd --system --groups gpio,video --home /opt/pi_edge pi-edge
install -d -o pi-edge /opt/pi_edge /etc/pi_edge /var/lib/pi_edge/spool /var/log/pi_edge
# system site packages: picamera2 and lgpio come from Raspberry Pi OS, not PyPI
python3 -m venv --system-site-packages /opt/pi_edge/venv
/opt/pi_edge/venv/bin/pip install -q "numpy<2" pyyaml pydantic-settings httpx gpiozero
cp -r "$SRC/pi_edge" "$SRC/pcb" /opt/pi_edge/
[ -f /etc/pi_edge/edge.yaml ] || cp "$SRC/pi_edge/edge.example.yaml" /etc/pi_edge/edge.yaml
[ -f /etc/pi_edge/edge.env ] || { echo "PI_EDGE_API_KEY=" > /etc/pi_edge/edge.env; chmod 600 /etc/pi_edge/edge.env; }
cp "$SRC/pi_edge/deploy/pi-edge.service" /etc/systemd/system/pi-edge.service
systemctl daemon-reload
systemctl enable --now pi-edge.service
echo "installed; edit /etc/pi_edge/edge.yaml and /etc/pi_edge/edge.env, then: systemctl restart pi-edge"
