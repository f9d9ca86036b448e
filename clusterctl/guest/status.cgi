#!/bin/sh
# GET /cgi-bin/status: this boot's id and uptime, so a client tells a live move (same boot id,
# uptime carried on) from a restart (a new boot id)
read -r uptime _ < /proc/uptime
printf 'Content-Type: application/json\r\n\r\n'
printf '{"boot_id": "%s", "uptime": %s, "boots": %s}\n' \
    "$(cat /proc/sys/kernel/random/boot_id)" "$uptime" \
    "$(cat /data/boots 2>/dev/null | wc -l)"
