#!/bin/sh
# GET /cgi-bin/status: this boot's id and uptime, so a client tells a live move (same boot id,
# uptime carried on) from a restart (a new boot id), and how many boots the disk has seen.
# Shell builtins only: one process per request (the guest may be emulated, and slow).
read -r uptime _ < /proc/uptime
read -r boot_id < /proc/sys/kernel/random/boot_id
boots=0
if [ -r /data/boots ]; then
    while read -r _; do boots=$((boots + 1)); done < /data/boots
fi
printf 'Content-Type: application/json\r\n\r\n'
printf '{"boot_id": "%s", "uptime": %s, "boots": %s}\n' "$boot_id" "$uptime" "$boots"
